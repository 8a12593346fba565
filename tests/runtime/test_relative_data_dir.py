"""``O16N_DATA_DIR`` defaults to the relative ``data``: the whole app still runs, without
Docker here (the Docker engine's case is in ``test_container_chain``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.app import create_app
from tests.conftest import bearer, login, make_settings
from tests.sessions.conftest import execute, new_session


async def test_a_relative_data_directory_runs_sessions_on_the_fake_engine(
    aiohttp_client: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(data_dir)
    settings = make_settings(Path("data"), engine="fake")
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    session = await new_session(client, headers)
    result = await execute(client, headers, session, "print(1 + 1)")
    assert result["consoleOutput"] == "2\n", result
