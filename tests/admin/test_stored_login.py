"""A stored login's tokens go only to the server that issued them: ``--server`` (or
``O16N_SERVER``) naming another one is refused before any request, and logout revokes
the refresh token where it was issued. No Docker: a recording HTTP server stands in for
the other host, which is what the test is about."""

from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from o16n_client import admin
from o16n_client.http import UNREACHABLE, credentials_path


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every request with an empty JSON list and remembers what it was sent."""

    seen: ClassVar[list[tuple[str, str, str]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        Recorder.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def stored_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A stored login for a server on port 9 (nothing listens there); its URL."""
    for name in list(os.environ):
        if name.startswith("O16N_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    monkeypatch.setenv("HOME", str(tmp_path))
    issuer = "http://127.0.0.1:9"
    path = credentials_path()
    path.parent.mkdir(parents=True, mode=0o700)
    pair = {
        "server": issuer,
        "username": "admin",
        "access_token": "stored-access-token",
        "refresh_token": "stored-refresh-token",
        "expires_on": 4102444800,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(pair, out)
    return issuer


def test_a_stored_token_is_not_sent_to_another_server(
    stored_login: str,
    recorder: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert admin.main(["--server", recorder, "users", "list"]) == UNREACHABLE
    assert "stored login is for" in capsys.readouterr().err
    monkeypatch.setenv("O16N_SERVER", recorder)
    assert admin.main(["users", "list"]) == UNREACHABLE
    assert Recorder.seen == []


def test_the_same_server_spelt_otherwise_is_the_same(
    stored_login: str, recorder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert admin.same_server("http://127.0.0.1:9", "HTTP://127.0.0.1:9/")
    assert admin.same_server("https://o16n.example", "https://o16n.example:443")
    assert not admin.same_server("http://o16n.example", "https://o16n.example")
    assert not admin.same_server("http://127.0.0.1:9", "http://127.0.0.1:99")
    assert not admin.same_server("http://127.0.0.1:x", "http://127.0.0.1:x")


def test_logout_revokes_where_the_login_was_made(
    stored_login: str, recorder: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin.main(["--server", recorder, "logout"]) == 0
    assert Recorder.seen == []  # the issuer (port 9) was tried, not the server named
    assert not credentials_path().exists()
