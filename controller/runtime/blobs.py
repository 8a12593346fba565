"""Files on the controller's disk as agent request blobs, read off the loop in pieces
(``AgentLink.call`` sends a ``BlobSource`` piece by piece, never whole)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO


class FileSource:
    """An open file, from its current position to its end, as a ``BlobSource``."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.size = os.fstat(file.fileno()).st_size - file.tell()

    async def read(self, n: int) -> bytes:
        return await asyncio.to_thread(self._file.read, n)


@contextlib.asynccontextmanager
async def open_source(path: Path) -> AsyncIterator[FileSource]:
    """``path`` opened as a ``FileSource``; ``FileNotFoundError`` when it is missing."""
    file = await asyncio.to_thread(path.open, "rb")
    try:
        yield FileSource(file)
    finally:
        await asyncio.to_thread(file.close)
