"""First-start accounts, the users CLI, and account changes taking effect on a running server."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.roles import Role
from controller.settings import Settings
from tests.conftest import bearer, database_env, login, make_settings


def cli(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "O16N_DATA_DIR": str(data_dir), **database_env(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_without_a_configured_password_admin_gets_a_generated_one(
    aiohttp_client: Any, data_dir: Path
) -> None:
    settings = make_settings(data_dir, admin_password=None)
    client = await aiohttp_client(create_app(settings))
    path = data_dir / "admin-password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = path.read_text().strip()
    assert len(password) >= 24
    await login(client, "admin", password)
    assert stat.S_IMODE((data_dir / "jwt-secret").stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


async def test_cli_manages_users_and_the_server_follows(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    out = cli(
        settings.data_dir,
        "users",
        "add",
        "alice",
        "--role",
        "reader",
        "--password-stdin",
        stdin="alice-password\n",
    )
    assert out.returncode == 0, out.stderr
    assert "Reader" in out.stdout
    pair = await login(client, "alice", "alice-password")
    headers = bearer(pair["access_token"])
    assert (await client.get("/status", headers=headers)).status == 200

    out = cli(
        settings.data_dir, "users", "add", "alice", "--password-stdin", stdin="another-pass\n"
    )
    assert out.returncode == 1 and "already exists" in out.stderr
    out = cli(settings.data_dir, "users", "add", "bob", "--password-stdin", stdin="short\n")
    assert out.returncode != 0 and "8 characters" in out.stderr

    out = cli(settings.data_dir, "users", "set-role", "alice", "Contributor")
    assert out.returncode == 0, out.stderr
    out = cli(settings.data_dir, "users", "list")
    assert "alice\tContributor\tactive" in out.stdout

    out = cli(settings.data_dir, "users", "disable", "alice")
    assert out.returncode == 0, out.stderr
    # the server notices the CLI's commit within its watch interval
    for _ in range(40):
        if (await client.get("/status", headers=headers)).status == 401:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("a disabled user's token still works")
    resp = await client.post("/login", json={"username": "alice", "password": "alice-password"})
    assert resp.status == 401

    out = cli(settings.data_dir, "users", "enable", "alice")
    assert out.returncode == 0
    await login(client, "alice", "alice-password")
    out = cli(
        settings.data_dir,
        "users",
        "set-password",
        "alice",
        "--password-stdin",
        stdin="brand-new-password\n",
    )
    assert out.returncode == 0
    await login(client, "alice", "brand-new-password")


def test_role_parsing() -> None:
    assert Role.parse("owner") is Role.OWNER
    assert Role.parse(" Reader ") is Role.READER
    try:
        Role.parse("root")
    except ValueError as exc:
        assert "Owner, Contributor or Reader" in str(exc)
    else:
        raise AssertionError("unknown role accepted")
