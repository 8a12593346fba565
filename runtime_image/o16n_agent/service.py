"""The operations of a web-service container: warm up once, then answer requests (API.md §6.3).

``service_init`` restores the published workspace (files into the working directory,
objects into a base namespace), runs ``initCode`` once in that base namespace and compiles
the service code. Each ``run`` executes the code in a fresh namespace built from the base
globals plus the decoded inputs, so variables never leak from one request to the next;
files a request creates or changes are put back as initCode left them. In ``fork``
isolation every request runs in a child forked from the warmed process, so not even
in-place changes to shared objects survive it.
"""

from __future__ import annotations

import base64
import gc
import os
import shutil
import signal
import time
from collections.abc import Callable
from typing import Any

from o16n_agent import codec, files, protocol, workspace
from o16n_agent.errors import OpError
from o16n_agent.execution import (
    REPLY_MAX,
    CappedWriter,
    CompileError,
    cap_changed,
    changed_files,
    compile_code,
    file_states,
    run_captured,
)

Reply = tuple[dict[str, Any], bytes | None]
CONSOLE_LIMIT = 1 << 20


class ServiceOps:
    def __init__(self, workdir: str, on_state: Callable[[bool], None]) -> None:
        self.workdir = workdir
        self._on_state = on_state
        self.base: dict[str, Any] = {}
        self.code: Any = None
        self.inputs: list[tuple[str, str]] = []
        self.outputs: list[tuple[str, str]] = []
        self.output_files: list[str] = []
        self.init_error = ""
        self.isolation = "shared"
        self.pristine: dict[str, tuple[int, int]] = {}
        self.init_files = b""  # the working directory as initCode left it: requests return to it

    def handlers(self) -> dict[str, Callable[[dict[str, Any], bytes | None], Reply]]:
        return {"service_init": self.init, "run": self.run}

    # --- warm-up --------------------------------------------------------------------------

    def init(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        self.inputs = [(d["name"], d["type"]) for d in message.get("inputs", [])]
        self.outputs = [(d["name"], d["type"]) for d in message.get("outputs", [])]
        self.output_files = list(message.get("output_files", []))
        self.isolation = message.get("isolation", "shared")
        namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        objects: list[str] = []
        if blob:
            objects, _ = workspace.restore(namespace, self.workdir, blob)
        started = time.perf_counter()
        init_code = message.get("init_code") or ""
        console = CappedWriter(CONSOLE_LIMIT)
        if init_code:
            error = self._exec(init_code, "<initCode>", namespace, console)
            if error:
                self.init_error = f"initCode failed:\n{error}"
        try:
            self.code = compile_code(message.get("code") or "", "<code>")
        except CompileError as exc:
            self.init_error = self.init_error or f"the service code does not compile: {exc}"
        self.base = namespace
        self.init_files, _, _ = workspace.save({}, self.workdir)
        self.pristine = file_states(self.workdir)
        # What the warm-up made (the model, the libraries: a hundred thousand objects) lives
        # as long as the container: out of the collector's sight, so that a full collection
        # a request triggers later scans only what requests left, not half a second's worth.
        gc.collect()
        gc.freeze()
        return {
            "objects": objects,
            "init_error": self.init_error,
            "init_console": console.getvalue(),
            "init_seconds": time.perf_counter() - started,
        }, None

    # --- requests -------------------------------------------------------------------------

    def run(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        if self.init_error:
            return _result(False, self.init_error, "", [], {}, {}), None
        values = message.get("inputs")
        if not isinstance(values, dict):
            raise OpError("'inputs' must be an object", "invalid")
        if self.isolation == "fork":
            result = self._run_forked(values)
            after = file_states(self.workdir)
        else:
            result, after = self._run(values)
        if after != self.pristine:  # here, not in a forked child: the parent keeps the state
            self._restore_files(after)
        return result, None

    def _run(self, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
        """The request's result, and the working directory's file states after it."""
        namespace = dict(self.base)
        for name, kind in self.inputs:
            try:
                namespace[name] = codec.from_json(values.get(name), kind)
            except codec.DecodeError as exc:
                raise OpError(f"input '{name}' ({kind}): {exc}", "invalid") from None
        console = CappedWriter(CONSOLE_LIMIT)
        error = self._exec_compiled(self.code, namespace, console)
        outputs: dict[str, Any] = {name: None for name, _ in self.outputs}
        after = file_states(self.workdir)
        file_values = {name: _read_b64(self.workdir, name) for name in self.output_files}
        changed, total = cap_changed(changed_files(self.pristine, after))
        result = _result(not error, error, console.getvalue(), changed, outputs, file_values)
        result["changed_total"] = total
        if not error and self.outputs:
            budget = REPLY_MAX - codec.encoded_size(result) - 4096
            pairs = [(name, namespace.get(name)) for name, _ in self.outputs]
            encoded, error = codec.encode_outputs(pairs, budget)
            if error:
                result["success"], result["error"] = False, error
            else:
                result["outputs"] = {
                    name: v for (name, _), v in zip(self.outputs, encoded, strict=True)
                }
        return result, after

    def _run_forked(self, values: dict[str, Any]) -> dict[str, Any]:
        """Run one request in a child of the warmed process; the child's changes die with it."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: compute, write the reply, leave without unwinding the agent
            os.close(read_fd)
            try:
                try:
                    outcome, _ = self._run(values)
                except OpError as exc:
                    outcome = {"op_error": str(exc), "code": exc.code}
                except BaseException as exc:  # user code the request ran, whatever it raised
                    outcome = _result(False, codec.describe(exc), "", [], {}, {})
                try:
                    data = protocol.dumps(outcome)
                except BaseException as exc:
                    data = protocol.dumps(
                        _result(
                            False,
                            f"the result cannot be sent: {codec.describe(exc)}",
                            "",
                            [],
                            {},
                            {},
                        )
                    )
                with os.fdopen(write_fd, "wb") as pipe:
                    pipe.write(data)
            finally:
                os._exit(0)
        os.close(write_fd)
        self._on_state(True)  # SIGINT now means: stop the child
        try:
            with os.fdopen(read_fd, "rb") as pipe:
                data = pipe.read()
        except KeyboardInterrupt:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return _result(False, "KeyboardInterrupt: the request was interrupted", "", [], {}, {})
        finally:
            self._on_state(False)
        _, status = os.waitpid(pid, 0)
        if not data:
            raise OpError(f"the request's process ended without a result (status {status})")
        reply: dict[str, Any] = protocol.loads(data)
        if "op_error" in reply:
            raise OpError(reply["op_error"], reply.get("code", "error"))
        return reply

    # --- helpers --------------------------------------------------------------------------

    def _exec(
        self, code: str, filename: str, namespace: dict[str, Any], console: CappedWriter
    ) -> str:
        try:
            compiled = compile_code(code, filename)
        except CompileError as exc:
            return str(exc)
        return self._exec_compiled(compiled, namespace, console)

    def _exec_compiled(
        self, compiled: Any, namespace: dict[str, Any], console: CappedWriter
    ) -> str:
        """Run compiled code with console capture; returns the error text, or ''."""

        def execute() -> None:
            exec(compiled, namespace)  # noqa: S102 - running the published code is the point

        error, _ = run_captured(
            execute, console, self._on_state, "KeyboardInterrupt: the request was interrupted"
        )
        return error

    def _restore_files(self, after: dict[str, tuple[int, int]]) -> None:
        """Put the working directory back as initCode left it."""
        for name in after:
            if name not in self.pristine:
                _remove(os.path.join(self.workdir, name))
        if any(after.get(n) != s for n, s in self.pristine.items()):
            workspace.restore({}, self.workdir, self.init_files, objects=False)
        self.pristine = file_states(self.workdir)


def _result(
    success: bool,
    error: str,
    console: str,
    changed: list[str],
    outputs: dict[str, Any],
    files: dict[str, str | None],
) -> dict[str, Any]:
    return {
        "success": success,
        "error": error,
        "console": console,
        "changed_files": changed,
        "outputs": outputs,
        "files": files,
    }


def _read_b64(workdir: str, name: str) -> str | None:
    """An output file as base64; ``None`` when the request left no regular file by that name."""
    try:
        return base64.b64encode(files.read_file(workdir, name)).decode("ascii")
    except OpError:
        return None


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except OSError:
        pass
