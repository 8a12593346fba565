"""Reaching a compute node over SSH: one OpenSSH master connection per node, and through it
the node's engine socket, the agents' sockets and commands on the node.

Why OpenSSH's own client: host keys are pinned (``StrictHostKeyChecking=yes`` against the
operator's known_hosts, no "accept new key"), logins use one client key and never prompt
(``BatchMode``), a silent link ends the master within ``alive_interval * alive_count``
seconds (``ServerAlive*``), and its streamlocal forwarding carries Unix sockets both ways
with both ends authenticated — so containers keep ``network none``. Everything goes through
the master's control socket (``-S``): one TCP connection and one login per node.

Nothing the node sends is trusted: every output read here is bounded, and what is quoted
into an error or a log line is cut short and stripped of control characters.

What a node's sshd needs, for the controller's user (a ``Match User`` block will do; see
``tests/runtime/sshd.py``): ``StreamLocalBindUnlink yes`` (a forward replaces the socket an
earlier one left), ``StreamLocalBindMask 0111`` (the container's uid connects), and
forwarding left on: ``AllowTcpForwarding no`` refuses streamlocal forwards too (OpenSSH
9.2), ``PermitOpen none`` refuses ``-L`` to the engine socket (``PermitListen none`` is
fine). ``MaxSessions`` (10) bounds concurrent commands: ``sessions`` stays below it. The
user may reach the engine socket (the ``docker`` group) and owns the node directory; its
login shell is POSIX (commands are quoted for one) and starts fast: each ``run`` starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shlex
import signal
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from controller.errors import EngineUnavailable, RuntimeFailure
from controller.runtime.nodes import NodeAddress

log = logging.getLogger(__name__)

#: A Unix socket path's longest length (``sun_path`` holds 108 bytes with the final NUL).
SOCKET_PATH_MAX = 107
#: ssh binds its control socket as ``<ControlPath>.<16 hex digits>`` before renaming it.
_CONTROL_SUFFIX = 17
#: What a path handed to ssh may hold: ssh splits options on whitespace, expands ``%``
#: tokens and ``~``, and reads ``:`` as the separator of a forward's two ends.
_SSH_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/@+=,-]*$")
#: How much of a process's stderr is kept (its tail) and quoted in errors.
_STDERR_KEEP = 8192
_STDERR_LINES = 6
_LINE_MAX = 300
#: Seconds a control command (``-O check/forward/cancel/exit``) may take.
_CONTROL_TIMEOUT = 10.0
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_DEFAULT_ENGINE_SOCKET = "/var/run/docker.sock"


def ensure_client_key(path: Path) -> str:
    """The controller's client key: generated once (ed25519, no passphrase: the controller
    logs in unattended; 0600 in a 0700 directory) if ``path`` is missing. Returns the public
    key line, for the nodes' ``authorized_keys``. Blocking: run it in an executor."""
    public = path.with_name(path.name + ".pub")
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        public.unlink(missing_ok=True)  # ssh-keygen would ask before overwriting it
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "o16n-controller",
                "-f",
                str(path),
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
        path.chmod(0o600)
    if not public.exists():
        derived = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
        public.write_bytes(derived.stdout)
    return public.read_text().strip()


def _printable(text: str, limit: int = _LINE_MAX) -> str:
    text = _CONTROL_CHARS.sub("?", text.strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _last_lines(tail: bytes | bytearray) -> str:
    """The last few lines of what ssh (or the node) wrote to stderr, safe to quote."""
    lines = [line for line in bytes(tail).decode(errors="replace").splitlines() if line.strip()]
    return " | ".join(_printable(line) for line in lines[-_STDERR_LINES:])


def _check_socket_path(path: str, what: str, limit: int = SOCKET_PATH_MAX) -> None:
    if not _SSH_SAFE_PATH.match(path) or "/../" in path + "/":
        raise RuntimeFailure(
            f"{what} {_printable(path)!r} must be an absolute path of letters, digits and "
            "._/@+=,- only (ssh reads whitespace, ':' and '%' in it as syntax)"
        )
    if len(path.encode()) > limit:
        raise RuntimeFailure(
            f"{what} {path!r} is {len(path.encode())} bytes long; a Unix socket's path "
            f"is at most {limit} here: choose a shorter directory"
        )


def _check_private(path: Path, what: str, *, readable_by_others: bool) -> None:
    """Refuse a key or known_hosts file that is missing, or that others could change
    (a pinned host key anyone can replace pins nothing; ssh ignores a key others can read)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise EngineUnavailable(f"{what} {path} does not exist") from None
    if not stat.S_ISREG(info.st_mode):
        raise EngineUnavailable(f"{what} {path} is not a regular file")
    loose = 0o022 if readable_by_others else 0o077
    if info.st_mode & loose:
        allowed = "writable" if readable_by_others else "readable or writable"
        raise EngineUnavailable(
            f"{what} {path} is {allowed} by other users (mode {info.st_mode & 0o777:04o}); "
            f"chmod {'644' if readable_by_others else '600'} it"
        )


class _Tail:
    """The last bytes a stream wrote, kept while it is drained (bounded memory)."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(4096):
            self.data += chunk
            del self.data[:-_STDERR_KEEP]


class SshNode:
    """One compute node reached over SSH: its master connection and what goes through it.

    ``open`` connects (again, after the master ended); ``close`` ends it. A master that ends
    by itself (the link was cut: ``ServerAlive``, or the node's sshd went) is seen by
    ``alive`` and ``wait_closed``; its forwards are gone with it, the caller opens again and
    sets them up anew."""

    def __init__(
        self,
        address: NodeAddress,
        *,
        key_file: Path,
        known_hosts: Path,
        control_dir: Path,
        connect_timeout: float = 10.0,
        alive_interval: int = 1,
        alive_count: int = 3,
        sessions: int = 8,
    ) -> None:
        if address.scheme != "ssh":
            raise ValueError(f"{address.entry} is not an ssh:// node")
        self.address = address
        self.key_file = key_file
        self.known_hosts = known_hosts
        self.control_dir = control_dir
        self.control_path = control_dir / f"{address.name}.ctl"
        self.connect_timeout = connect_timeout
        self.alive_interval = alive_interval
        self.alive_count = alive_count
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stderr = _Tail()
        self._closing = False
        self._ready = False  # the running master logged in
        self._engine_socket: str | None = None
        self._remote_forwards: set[tuple[str, str]] = set()
        self._local_forwards: set[Path] = set()
        self._lock = asyncio.Lock()
        # sshd refuses more than MaxSessions (10 by default) sessions on one connection:
        # commands past ``sessions`` wait their turn instead of failing
        self._sessions = asyncio.Semaphore(sessions)

    # -- the ssh command line -------------------------------------------------------------

    def _options(self) -> list[str]:
        options = {
            "BatchMode": "yes",
            "StrictHostKeyChecking": "yes",
            "UpdateHostKeys": "no",  # the pinned keys are the operator's to change
            "UserKnownHostsFile": str(self.known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "IdentitiesOnly": "yes",
            "IdentityFile": str(self.key_file),
            "IdentityAgent": "none",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "PreferredAuthentications": "publickey",
            "CheckHostIP": "no",  # nothing written into the pinned file, whatever the client
            "ExitOnForwardFailure": "yes",
            "ServerAliveInterval": str(self.alive_interval),
            "ServerAliveCountMax": str(self.alive_count),
            "ConnectTimeout": str(max(1, round(self.connect_timeout))),
            "ControlPath": str(self.control_path),
            "ControlPersist": "no",
            "StreamLocalBindUnlink": "yes",
        }
        argv = ["ssh", "-F", "/dev/null"]
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        return [*argv, "-p", str(self.address.port), "-l", self.address.user]

    def _control(self, *args: str) -> list[str]:
        """A command to the running master (``-O …``)."""
        return [*self._options(), "-S", str(self.control_path), *args, "--", self.address.host]

    # -- the master ------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Whether the master process still runs (it ends when the link is cut)."""
        return self._process is not None and self._process.returncode is None

    async def open(self) -> None:
        """Start the master and wait until it answers on its control socket; raises
        ``EngineUnavailable`` with ssh's own words (host key verification failed,
        permission denied, connection refused) when it cannot log in."""
        async with self._lock:
            if self.alive:
                return
            try:
                await asyncio.to_thread(self._prepare)
            except (OSError, subprocess.SubprocessError) as exc:
                raise EngineUnavailable(
                    f"cannot prepare ssh for {self.address.entry}: {exc}"
                ) from exc
            self._closing = False
            self._ready = False
            self._engine_socket = None
            self._remote_forwards.clear()
            self._stderr = _Tail()
            argv = [
                *self._options(),
                "-M",
                "-N",
                "-S",
                str(self.control_path),
                "--",
                self.address.host,
            ]
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,  # a Ctrl-C meant for the controller is not its
                )
            except OSError as exc:
                raise EngineUnavailable(
                    f"cannot start ssh for {self.address.entry}: {exc}"
                ) from exc
            self._process = process
            self._watcher = asyncio.create_task(
                self._watch(process, self._stderr), name=f"ssh master {self.address.name}"
            )
            try:
                await self._wait_ready(process)
            except BaseException:
                await self._stop_process(process)
                raise
            self._ready = True
            log.info(
                "ssh master started",
                extra={
                    "node": self.address.entry,
                    "node_name": self.address.name,
                    "pid": process.pid,
                },
            )

    def _prepare(self) -> None:
        """Blocking checks before a master starts: the files it trusts, its control path."""
        _check_private(self.key_file, "the ssh client key", readable_by_others=False)
        _check_private(self.known_hosts, "the ssh known_hosts file", readable_by_others=True)
        for path, what in ((self.key_file, "client key"), (self.known_hosts, "known_hosts file")):
            if not _SSH_SAFE_PATH.match(str(path)):
                raise EngineUnavailable(
                    f"the ssh {what} path {str(path)!r} must be absolute, of letters, digits "
                    "and ._/@+=,- only (ssh reads whitespace and '%' in it as syntax)"
                )
        control = str(self.control_path)
        if not _SSH_SAFE_PATH.match(control):
            raise EngineUnavailable(
                f"the ssh control directory {str(self.control_dir)!r} must be an absolute path "
                "of letters, digits and ._/@+=,- only"
            )
        if len(control.encode()) + _CONTROL_SUFFIX > SOCKET_PATH_MAX:
            raise EngineUnavailable(
                f"the ssh control socket {control} is too long for a Unix socket "
                f"({len(control.encode())} bytes, at most {SOCKET_PATH_MAX - _CONTROL_SUFFIX}): "
                "use a shorter data directory"
            )
        self.control_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.control_path.exists():
            # a master left by a controller that died: ssh would not replace its socket
            # (it would go on without multiplexing), and it may hold forwards we need
            subprocess.run(
                self._control("-O", "exit"),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_CONTROL_TIMEOUT,
                check=False,
            )
            self.control_path.unlink(missing_ok=True)

    async def _wait_ready(self, process: asyncio.subprocess.Process) -> None:
        # ConnectTimeout bounds the TCP connect and the banner; the login has no bound of
        # its own in ssh, so this does.
        deadline = asyncio.get_running_loop().time() + 2 * self.connect_timeout + 5
        exited = asyncio.ensure_future(process.wait())
        try:
            while True:
                if await asyncio.to_thread(self.control_path.exists):
                    check = self._control("-O", "check")
                    code, _, _ = await self._exec(check, None, _CONTROL_TIMEOUT, 4096)
                    if code == 0:
                        return
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    raise EngineUnavailable(
                        f"ssh to {self.address.entry} did not log in within "
                        f"{2 * self.connect_timeout + 5:.0f} s: {self._why()}"
                    )
                await asyncio.wait({exited}, timeout=min(0.05, remaining))
                if exited.done():
                    await self._watcher_done()
                    raise EngineUnavailable(
                        f"ssh to {self.address.entry} failed (exit {process.returncode}): "
                        f"{self._why()}"
                    )
        finally:
            exited.cancel()

    def _why(self) -> str:
        return _last_lines(self._stderr.data) or "ssh said nothing"

    async def _watcher_done(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._watcher), 5)

    async def _watch(self, process: asyncio.subprocess.Process, tail: _Tail) -> None:
        """Drain the master's stderr (bounded) and log its end."""
        assert process.stderr is not None
        await tail.drain(process.stderr)
        code = await process.wait()
        extra = {
            "node": self.address.entry,
            "node_name": self.address.name,
            "pid": process.pid,
            "exit_code": code,
            "stderr": _last_lines(tail.data),
        }
        if self._closing:
            log.info("ssh master ended", extra=extra)
        elif not self._ready:
            log.info("ssh master could not log in", extra=extra)  # open() raises it
        else:
            log.warning("ssh master ended by itself: the link to the node is down", extra=extra)

    async def wait_closed(self) -> None:
        """Return when the master has ended (by ``close``, or a cut link)."""
        if self._process is not None:
            await self._process.wait()
        await self._watcher_done()

    async def close(self) -> None:
        """End the master (``-O exit``; then SIGTERM, SIGKILL), remove its control socket
        and the local sockets it forwarded. Idempotent."""
        async with self._lock:
            self._closing = True
            process = self._process
            if process is not None and process.returncode is None:
                with contextlib.suppress(RuntimeFailure, OSError):
                    await self._exec(self._control("-O", "exit"), None, _CONTROL_TIMEOUT, 4096)
                await self._stop_process(process)
            elif self._watcher is not None:
                await self._watcher_done()
            local, self._local_forwards = self._local_forwards, set()
            self._remote_forwards.clear()
            await asyncio.to_thread(self._remove_sockets, [self.control_path, *local])

    async def _stop_process(self, process: asyncio.subprocess.Process) -> None:
        self._closing = True
        for signum in (None, signal.SIGTERM, signal.SIGKILL):
            if signum is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), 2 if signum is None else 5)
            if process.returncode is not None:
                break
        await self._watcher_done()

    @staticmethod
    def _remove_sockets(paths: list[Path]) -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()

    # -- through the master ----------------------------------------------------------------

    async def run(
        self,
        argv: list[str],
        *,
        stdin: bytes | AsyncIterator[bytes] | None = None,
        timeout: float = 30.0,
        limit: int = 1 << 20,
    ) -> bytes:
        """Run ``argv`` on the node (through the master: the user's shell runs it quoted with
        ``shlex.join``, under ``timeout``) and return its stdout. ``RuntimeFailure`` when it
        exits non-zero (with its stderr, cut short), writes more than ``limit`` bytes or takes
        longer than ``timeout`` seconds (it is killed); ``EngineUnavailable`` when the link
        is down. At most ``sessions`` commands run at once; the others wait for a turn (not
        counted in their ``timeout``)."""
        if not argv:
            raise ValueError("run needs a command")
        self._need_master()
        # Killing our client does not end the command on the node (without a terminal,
        # sshd leaves it running when the channel closes): coreutils' timeout bounds it there
        # too, a second after ours, with whatever it started.
        bounded = ["timeout", "-k", "2", f"{timeout + 1:.3f}", *argv]
        ssh = [
            *self._options(),
            "-S",
            str(self.control_path),
            "-T",
            "--",
            self.address.host,
            shlex.join(bounded),
        ]
        shown = _printable(shlex.join(argv), 120)
        try:
            async with self._sessions:
                code, out, err = await self._exec(ssh, stdin, timeout, limit)
        except _TooMuch:
            raise RuntimeFailure(
                f"`{shown}` on {self.address.entry} wrote more than {limit} bytes"
            ) from None
        except TimeoutError:
            raise RuntimeFailure(
                f"`{shown}` on {self.address.entry} took longer than {timeout:g} s"
            ) from None
        if code != 0:
            self._need_master()
            raise RuntimeFailure(
                f"`{shown}` on {self.address.entry} failed (exit {code}): "
                f"{_last_lines(err) or 'no error output'}"
            )
        return out

    async def docker_host(self) -> str:
        """The node's engine socket, as ``docker -H ssh://`` finds it: the path of the node's
        own ``DOCKER_HOST`` when that is ``unix://…``, else /var/run/docker.sock."""
        if self._engine_socket is None:
            raw = await self.run(["sh", "-c", 'printf %s "$DOCKER_HOST"'], limit=4096)
            value = raw.decode(errors="replace").strip()
            if not value:
                path = _DEFAULT_ENGINE_SOCKET
            elif value.startswith("unix://"):
                path = value[len("unix://") :]
                _check_socket_path(path, f"the engine socket DOCKER_HOST of {self.address.entry}")
            else:
                raise RuntimeFailure(
                    f"{self.address.entry}: its DOCKER_HOST {_printable(value, 120)!r} is not a "
                    "unix:// socket; o16n reaches a node's engine by its Unix socket only"
                )
            self._engine_socket = path
        return self._engine_socket

    async def forward_local(self, local: Path, remote: str) -> None:
        """Carry connections to the local socket ``local`` to the node's socket ``remote``
        (the engine's, say). A stale socket at ``local`` is replaced."""
        _check_socket_path(str(local), "the local socket")
        _check_socket_path(remote, "the node's socket")
        self._need_master()
        await asyncio.to_thread(self._remove_stale, local)
        await self._forward("forward", "-L", f"{local}:{remote}")
        self._local_forwards.add(local)

    async def forward_remote(self, remote: str, local: Path) -> None:
        """Make the node's sshd listen on ``remote`` (its directory must exist) and carry
        each connection to the local socket ``local`` (an agent's listener, say)."""
        _check_socket_path(remote, "the node's socket")
        _check_socket_path(str(local), "the local socket")
        self._need_master()
        await self._forward("forward", "-R", f"{remote}:{local}")
        self._remote_forwards.add((remote, str(local)))

    async def cancel_remote(self, remote: str, local: Path) -> None:
        """Stop a ``forward_remote``; nothing happens when it is not set (or the master
        is gone, and the forward with it)."""
        key = (remote, str(local))
        if key not in self._remote_forwards:
            return
        self._remote_forwards.discard(key)
        if self.alive:
            await self._forward("cancel", "-R", f"{remote}:{local}")

    async def _forward(self, op: str, flag: str, spec: str) -> None:
        code, _, err = await self._exec(
            self._control("-O", op, flag, spec), None, _CONTROL_TIMEOUT, 4096
        )
        if code != 0:
            self._need_master()
            raise RuntimeFailure(
                f"ssh {op} {flag} {spec} on {self.address.entry} failed: "
                f"{_last_lines(err) or f'exit {code}'}"
            )

    def _need_master(self) -> None:
        if not self.alive:
            raise EngineUnavailable(f"the ssh link to {self.address.entry} is down")

    @staticmethod
    def _remove_stale(path: Path) -> None:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise RuntimeFailure(f"{path} exists and is not a socket: it will not be replaced")
        path.unlink()

    # -- subprocesses ----------------------------------------------------------------------

    async def _exec(
        self,
        argv: list[str],
        stdin: bytes | AsyncIterator[bytes] | None,
        timeout: float,
        limit: int,
    ) -> tuple[int, bytes, bytes]:
        """Run one ssh client; its exit code, stdout (at most ``limit`` bytes, else
        ``_TooMuch``) and the tail of its stderr. ``TimeoutError`` after ``timeout``; the
        process is killed whenever this does not return normally."""
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:  # no ssh, no processes or file descriptors left
            raise EngineUnavailable(f"cannot start ssh for {self.address.entry}: {exc}") from exc
        assert process.stdout is not None and process.stderr is not None
        out = bytearray()
        err = _Tail()

        async def read_out(stream: asyncio.StreamReader) -> None:
            while chunk := await stream.read(65536):
                out.extend(chunk)
                if len(out) > limit:
                    raise _TooMuch

        async def feed(writer: asyncio.StreamWriter) -> None:
            try:
                if isinstance(stdin, bytes | bytearray):
                    writer.write(stdin)
                    await writer.drain()
                elif stdin is not None:
                    async for chunk in stdin:
                        writer.write(chunk)
                        await writer.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the command stopped reading; its exit code tells
            finally:
                writer.close()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    await writer.wait_closed()

        tasks = [
            asyncio.ensure_future(read_out(process.stdout)),
            asyncio.ensure_future(err.drain(process.stderr)),
        ]
        if process.stdin is not None:
            tasks.append(asyncio.ensure_future(feed(process.stdin)))
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*tasks)
                code = await process.wait()
        except BaseException:
            for task in tasks:
                task.cancel()
            await _kill(process)
            raise
        return code, bytes(out), bytes(err.data)


class _TooMuch(Exception):
    """A command wrote more than it may."""


async def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill a client and let go of its pipes. A multiplexed client passed them to the
    master, which may hold them a while longer: do not wait for that."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    transport = getattr(process, "_transport", None)
    if transport is not None:
        transport.close()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(process.wait()), 5)
