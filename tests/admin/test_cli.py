"""``o16n admin …`` run as a real subprocess against a real ``o16n serve``: login and the
0600 credentials file, tables and ``--json``, exit codes, diagnostics, an action whose
effect the API shows."""

from __future__ import annotations

import json
import os
import pty
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ADMIN_PASSWORD
from tests.live_server import LiveServer, run_server

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    yield from run_server()


def o16n(
    *args: str, home: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``o16n admin ARGS`` in a fresh process, its config under ``home``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("O16N_")}
    environment = {
        **clean,
        "PYTHONPATH": f"{ROOT}:{ROOT / 'runtime_image'}",
        "XDG_CONFIG_HOME": str(home / ".config"),
        "HOME": str(home),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "controller", "admin", *args],
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def admin_env(server: LiveServer) -> dict[str, str]:
    return {
        "O16N_SERVER": server.url,
        "O16N_USERNAME": "admin",
        "O16N_PASSWORD": ADMIN_PASSWORD,
    }


def test_login_writes_a_0600_file_and_refuses_a_wider_one(
    server: LiveServer, tmp_path: Path
) -> None:
    done = o16n(
        "login",
        "--server",
        server.url,
        "--username",
        "admin",
        "--password-stdin",
        home=tmp_path,
        stdin=ADMIN_PASSWORD + "\n",
    )
    assert done.returncode == 0, done.stderr
    path = tmp_path / ".config" / "o16n" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert stored["server"] == server.url and stored["refresh_token"]
    assert ADMIN_PASSWORD not in path.read_text()

    # the stored login is used (no flags, no environment); a table comes out
    done = o16n("users", "list", home=tmp_path)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "ROLE", "SOURCE", "DISABLED"]
    assert any(r.split()[:3] == ["admin", "Owner", "local"] for r in rows)

    # an expired access token is refreshed, and the file rewritten, still 0600
    stored["expires_on"] = 0
    path.write_text(json.dumps(stored))
    done = o16n("node", "show", "--no-engine-disk", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(path.read_text())["access_token"] != stored["access_token"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    path.chmod(0o644)
    done = o16n("users", "list", home=tmp_path)
    assert done.returncode == 3
    assert "0644" in done.stderr and "wider than 0600" in done.stderr
    assert done.stdout == ""


def test_json_output_parses(server: LiveServer, tmp_path: Path) -> None:
    done = o16n("users", "list", "--json", home=tmp_path, env=admin_env(server))
    assert done.returncode == 0, done.stderr
    users = json.loads(done.stdout)
    assert {"name": "admin", "role": "Owner"}.items() <= users[0].items()
    done = o16n("--json", "node", "show", home=tmp_path, env=admin_env(server))
    assert json.loads(done.stdout)["drain"]["draining"] is False


def test_a_non_owner_gets_exit_1_with_the_message(server: LiveServer, tmp_path: Path) -> None:
    resp = requests.post(
        f"{server.url}/admin/users",
        json={"name": "cli-reader", "role": "Reader", "password": "password-123"},
        headers=server.headers,
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    env = {"O16N_SERVER": server.url, "O16N_USERNAME": "cli-reader"}
    env["O16N_PASSWORD"] = "password-123"
    done = o16n("sessions", "list", home=tmp_path, env=env)
    assert done.returncode == 1
    assert "requires the Owner role" in done.stderr and "403" in done.stderr

    env["O16N_PASSWORD"] = "wrong-password"
    done = o16n("sessions", "list", home=tmp_path, env=env)
    assert done.returncode == 3 and "login failed" in done.stderr


def test_unreachable_server_and_bad_usage(tmp_path: Path) -> None:
    env = {"O16N_SERVER": "http://127.0.0.1:9", "O16N_TOKEN": "x"}
    done = o16n("users", "list", home=tmp_path, env=env)
    assert done.returncode == 3 and "cannot reach" in done.stderr
    done = o16n("users", "frobnicate", home=tmp_path, env=env)
    assert done.returncode == 2
    done = o16n("users", "list", home=tmp_path)  # no server anywhere
    assert done.returncode == 2 and "no server" in done.stderr


def test_diagnostics_end_to_end(server: LiveServer, tmp_path: Path) -> None:
    done = o16n("diagnostics", home=tmp_path, env=admin_env(server))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["STEP", "STATUS", "MS"]
    steps = {line.split()[0]: line.split()[1] for line in lines[1:8]}
    assert steps == dict.fromkeys(
        ["database", "engine", "runtimeImage", "session", "service", "token", "disk"], "pass"
    )
    assert lines[-1].startswith("pass in ")
    assert done.stderr == ""  # not a terminal: no spinner
    done = o16n("diagnostics", "--json", home=tmp_path, env=admin_env(server))
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["status"] == "pass" and report["cleanup"]["status"] == "pass"
    print(f"diagnostics wall time: {report['durationMs']:.0f} ms")  # the figure

    # on a terminal, a spinner goes to stderr while it runs (stdout stays the table)
    primary, secondary = pty.openpty()
    try:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("O16N_")}
        done = subprocess.run(
            [sys.executable, "-m", "o16n_client.admin", "diagnostics"],
            env={**clean, **admin_env(server), "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
            timeout=180,
            check=False,
        )
        os.set_blocking(primary, False)
        shown = os.read(primary, 65536).decode()
    finally:
        os.close(primary)
        os.close(secondary)
    assert done.returncode == 0 and done.stdout.splitlines()[-1].startswith("pass in ")
    assert "running diagnostics" in shown


def test_actions_take_effect(server: LiveServer, tmp_path: Path) -> None:
    env = admin_env(server)
    done = o16n(
        "node", "drain", "--reason", "cli test", "--retry-after", "60", home=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    state = requests.get(
        f"{server.url}/admin/node?engineDisk=false", headers=server.headers, timeout=10
    )
    assert state.json()["drain"] == {
        **state.json()["drain"],
        "draining": True,
        "reason": "cli test",
    }
    done = o16n("node", "undrain", home=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    state = requests.get(
        f"{server.url}/admin/node?engineDisk=false", headers=server.headers, timeout=10
    )
    assert state.json()["drain"]["draining"] is False

    done = o16n("users", "add", "cli-made", "--role", "Reader", "--json", home=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["password"]  # generated, shown once
    resp = requests.get(f"{server.url}/admin/users/cli-made", headers=server.headers, timeout=10)
    assert resp.json()["role"] == "Reader"
    done = o16n("users", "add", "cli-made", home=tmp_path, env=env)
    assert done.returncode == 1 and "409" in done.stderr
    done = o16n("users", "delete", "cli-made", home=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    resp = requests.get(f"{server.url}/admin/users/cli-made", headers=server.headers, timeout=10)
    assert resp.status_code == 404

    # the audit trail, paged through the cursor one entry at a time
    done = o16n("audit", "--action", "node.*", "--page-size", "1", "--json", home=tmp_path, env=env)
    actions = [e["action"] for e in json.loads(done.stdout)]
    drains = [a for a in actions if a != "node.diagnostics"]  # other tests' runs
    assert drains == ["node.undrain", "node.drain"]
    done = o16n("audit", "--action", "node.*", "--limit", "1", home=tmp_path, env=env)
    assert len(done.stdout.splitlines()) == 2  # the heading and one entry
    done = o16n("audit", "--action", "user.*", "--all", home=tmp_path, env=env)
    assert done.returncode == 0 and "user.delete" in done.stdout and "user.create" in done.stdout


def test_every_listing_and_user_change(server: LiveServer, tmp_path: Path) -> None:
    env = admin_env(server)
    headings = {
        ("sessions", "list"): "ID",
        ("services", "list"): "NAME",
        ("snapshots", "list"): "ID",
        ("batches", "list"): "ID",
        ("audit",): "TIME",
    }
    for args, heading in headings.items():
        done = o16n(*args, home=tmp_path, env=env)
        assert done.returncode == 0, (args, done.stderr)
        assert done.stdout.split()[0] == heading, args

    def user(*args: str) -> dict[str, Any]:
        done = o16n("users", *args, "--json", home=tmp_path, env=env)
        assert done.returncode == 0, (args, done.stderr)
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    done = o16n(
        "users",
        "add",
        "cli-changed",
        "--password-stdin",
        home=tmp_path,
        env=env,
        stdin="pw-123456\n",
    )
    assert done.returncode == 0, done.stderr
    assert user("set-role", "cli-changed", "Reader")["role"] == "Reader"
    assert user("disable", "cli-changed")["disabled"] is True
    assert user("enable", "cli-changed")["disabled"] is False
    assert user("end-logins", "cli-changed")["name"] == "cli-changed"
    assert user("show", "cli-changed")["role"] == "Reader"
    moved = user("transfer", "cli-changed", "--to", "admin")
    assert moved == {"from": "cli-changed", "to": "admin", "services": 0, "snapshots": 0}
    done = o16n(
        "users",
        "set-password",
        "cli-changed",
        "--password-stdin",
        home=tmp_path,
        env=env,
        stdin="new-password-1\n",
    )
    assert done.returncode == 0, done.stderr
    resp = requests.post(
        f"{server.url}/login",
        json={"username": "cli-changed", "password": "new-password-1"},
        timeout=10,
    )
    assert resp.status_code == 200
    done = o16n("users", "show", "nobody-here", home=tmp_path, env=env)
    assert done.returncode == 1 and "404" in done.stderr
