"""The engine seen through a line the test can cut and restore, and an app that reaches the
engine only through it: shared by the tests of an engine that goes away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.settings import Settings
from tests.conftest import make_settings


class EngineLine:
    """A Unix socket in front of the real engine's, which the test can cut and restore:
    to the controller, as if the engine went away and came back (a restart, say)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def up(self) -> None:
        self._cut = False
        if self._server is None:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def down(self) -> None:
        """Break every open connection and hang up on new ones (the socket stays: a
        missing socket file makes the Docker SDK leak the socket it tried it with)."""
        self._cut = True
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.down()
        if self._server is not None:
            self._server.close()
            self._server = None
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            if self._cut:
                return
            engine_reader, engine_writer = await asyncio.open_unix_connection(
                "/var/run/docker.sock"
            )
            self._writers.add(engine_writer)
            await asyncio.gather(
                self._pipe(reader, engine_writer), self._pipe(engine_reader, writer)
            )
        finally:
            for end in (writer, locals().get("engine_writer")):
                if end is not None:
                    end.close()
                    self._writers.discard(end)
                    with contextlib.suppress(OSError):
                        await end.wait_closed()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                target.write(data)
                await target.drain()
        target.close()


@contextlib.asynccontextmanager
async def engine_line(data_dir: Path) -> AsyncIterator[EngineLine]:
    """An ``EngineLine`` that is up, closed whatever the test did."""
    line = EngineLine(data_dir / "engine.sock")
    await line.up()
    try:
        yield line
    finally:
        await line.close()


async def app_behind(
    line: EngineLine, aiohttp_client: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, TestClient[Any, Any]]:
    """An app, without warm pools, whose engine client goes through ``line``; the test's own
    engine clients still go direct."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{line.path}")
    settings = make_settings(data_dir, warm_pool_size=0, service_warm_pool_size=0)
    client = await aiohttp_client(create_app(settings))
    monkeypatch.delenv("DOCKER_HOST")  # the app has its client; the test's own go direct
    return settings, client
