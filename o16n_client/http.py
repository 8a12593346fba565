"""A small HTTP client for o16n's REST API (stdlib only: the CLI adds no dependency).

Credentials come from, in this order: ``O16N_TOKEN`` (an access token), a user name
(``--username`` or ``O16N_USERNAME``) with ``O16N_PASSWORD`` (logged in for this one
command), or the credentials file ``o16n admin login`` wrote
(``$XDG_CONFIG_HOME/o16n/credentials.json``, else ``~/.config/o16n/credentials.json``),
whose access token is refreshed when it is about to expire. That file holds a refresh
token, so it is refused unless it is a regular file of the current user with mode 0600.
"""

from __future__ import annotations

import json
import os
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: exit codes a script can trust
OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3
#: seconds before its expiry an access token is refreshed
REFRESH_MARGIN = 60


class CliError(Exception):
    """What to print on stderr, and the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "o16n"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def read_credentials(path: Path) -> dict[str, Any] | None:
    """The stored token pair, or ``None`` without a file; refused when others could read it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", UNREACHABLE) from None
    with os.fdopen(fd, encoding="utf-8") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise CliError(f"{path} is not a regular file of yours; not reading it", UNREACHABLE)
        if info.st_mode & 0o077:
            raise CliError(
                f"{path} has mode {stat.S_IMODE(info.st_mode):04o}, wider than 0600: it holds a "
                f"refresh token, so it is not read; run `chmod 600 {path}` or log in again",
                UNREACHABLE,
            )
        try:
            data = json.load(handle)
        except ValueError:
            raise CliError(f"{path} is not JSON; log in again", UNREACHABLE) from None
    return data if isinstance(data, dict) else None


def write_credentials(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` with mode 0600 (in a 0700 directory), replacing the file atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            json.dump(data, handle)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer like any other, never followed: urllib would send the
    ``Authorization`` header on to wherever it points (another host, say)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


@dataclass
class Client:
    server: str
    token: str | None = None
    #: the credentials file's content, kept up to date when the token is refreshed
    stored: dict[str, Any] | None = None
    path: Path | None = None
    timeout: float = 30.0
    headers: dict[str, str] = field(default_factory=dict)

    # --- plumbing ---------------------------------------------------------------------------

    def raw(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        auth: bool = True,
        timeout: float | None = None,
    ) -> tuple[int, Any]:
        """(status, decoded JSON body); no exception for an HTTP error status."""
        url = self.server.rstrip("/") + path
        params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in (query or {}).items()}
        params = {k: v for k, v in params.items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if auth and self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with _OPENER.open(request, timeout=timeout or self.timeout) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach {self.server}: {reason}", UNREACHABLE) from None

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The JSON reply; 401 is exit 3 (after one refresh), any other error exit 1."""
        self._fresh()
        status, reply = self.raw(method, path, body, query, timeout=timeout)
        if status == 401 and self.stored is not None:
            self._refresh()
            status, reply = self.raw(method, path, body, query, timeout=timeout)
        if status == 401:
            raise CliError(f"not authenticated: {message_of(reply, status)}", UNREACHABLE)
        if status >= 300:  # a redirect is not followed (see _NoRedirect)
            raise CliError(message_of(reply, status), REFUSED)
        return reply

    # --- tokens -----------------------------------------------------------------------------

    def login(self, username: str, password: str) -> dict[str, Any]:
        status, reply = self.raw(
            "POST", "/login", {"username": username, "password": password}, auth=False
        )
        if status != 200 or not isinstance(reply, dict):
            raise CliError(f"login failed: {message_of(reply, status)}", UNREACHABLE)
        self.token = str(reply["access_token"])
        return reply

    def _fresh(self) -> None:
        if (
            self.stored is not None
            and time.time() > self.stored.get("expires_on", 0) - REFRESH_MARGIN
        ):
            self._refresh()

    def _refresh(self) -> None:
        assert self.stored is not None
        status, reply = self.raw(
            "POST",
            "/login/refreshToken",
            {"refreshToken": self.stored.get("refresh_token", "")},
            auth=False,
        )
        if status != 200 or not isinstance(reply, dict):
            raise CliError(
                f"the stored login expired or was revoked ({message_of(reply, status)}); "
                "run `o16n admin login` again",
                UNREACHABLE,
            )
        self.stored = stored_pair(self.server, str(self.stored.get("username", "")), reply)
        self.token = self.stored["access_token"]
        if self.path is not None:
            write_credentials(self.path, self.stored)


def stored_pair(server: str, username: str, reply: dict[str, Any]) -> dict[str, Any]:
    return {
        "server": server,
        "username": username,
        "access_token": reply["access_token"],
        "refresh_token": reply["refresh_token"],
        "expires_on": int(reply["expires_on"]),
    }


def message_of(reply: Any, status: int) -> str:
    if isinstance(reply, dict) and isinstance(reply.get("message"), str):
        return f"{reply['message']} (HTTP {status})"
    return f"HTTP {status}"


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
