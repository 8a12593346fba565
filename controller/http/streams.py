"""Large bodies in pieces: downloads stream from an agent's reply into the HTTP response,
uploads are spooled to a file on disk and sent to the agent from there.

Nothing here holds a body whole: a download moves one piece at a time, awaited end to end
(the client's pace reaches the agent through the socket buffers), and an upload goes to a
temporary file in the data directory (not ``/tmp``, which may be a tmpfs, i.e. memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from aiohttp import web

from controller.errors import PayloadTooLargeError
from controller.runtime.agent_link import SinkFailed
from controller.runtime.blobs import FileSource
from controller.settings import Settings

log = logging.getLogger(__name__)

#: bytes gathered before one write to disk (fewer trips to the executor)
WRITE_BATCH = 1 << 20


def spool_dir(settings: Settings) -> Path:
    """Where uploads wait on disk for their agent (the data directory, not a tmpfs)."""
    return settings.data_dir / "spool"


class ResponseSink:
    """An agent's reply blob as the body of an HTTP response: the response starts (with
    the blob's length as ``Content-Length``) when the reply's head has been checked."""

    def __init__(
        self,
        request: web.Request,
        *,
        content_type: str = "application/octet-stream",
        filename: str | None = None,
    ) -> None:
        self._request = request
        self._headers = {"Content-Type": content_type}
        if filename is not None:
            disposition = f"attachment; filename*=UTF-8''{quote(filename, safe='')}"
            self._headers["Content-Disposition"] = disposition
        self.response: web.StreamResponse | None = None

    async def start(self, size: int) -> None:
        response = web.StreamResponse(headers=self._headers)
        response.content_length = size
        await response.prepare(self._request)
        self.response = response

    async def write(self, chunk: bytes) -> None:
        assert self.response is not None
        await self.response.write(chunk)


async def download(
    request: web.Request, sink: ResponseSink, fetch: Awaitable[Any]
) -> web.StreamResponse:
    """Run ``fetch`` (an agent call streaming into ``sink``) and finish the response.

    Before the response started, an error becomes the usual JSON error. After it started,
    the only honest signal left is a cut connection: the client sees a body shorter than
    its ``Content-Length``."""
    try:
        await fetch
    except SinkFailed as exc:  # the client went away: nobody is left to tell
        if sink.response is None:
            raise exc.error from None
        log.info("download abandoned", extra={"path": request.path, "error": str(exc)[:200]})
        return _cut(request, sink.response)
    except asyncio.CancelledError:  # the handler was cancelled: its client went away
        if sink.response is not None:
            _cut(request, sink.response)
        raise
    except BaseException:
        if sink.response is None:
            raise
        log.warning("download broken off", extra={"path": request.path}, exc_info=True)
        return _cut(request, sink.response)
    if sink.response is None:  # the agent sent no blob: an empty body
        await sink.start(0)
    assert sink.response is not None
    await sink.response.write_eof()
    return sink.response


def _cut(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    response.force_close()
    if request.transport is not None:
        request.transport.abort()
    return response


# --- uploads ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def spool(
    chunks: AsyncIterator[bytes], spool_dir: Path, limit: int, what: str = "the body"
) -> AsyncIterator[FileSource]:
    """Write ``chunks`` to a temporary file in ``spool_dir`` (413 past ``limit`` bytes) and
    yield it, rewound, as a ``FileSource``; the file is gone afterwards."""
    await asyncio.to_thread(spool_dir.mkdir, mode=0o700, parents=True, exist_ok=True)
    file: IO[bytes] = await asyncio.to_thread(tempfile.TemporaryFile, "w+b", dir=spool_dir)
    try:
        size = 0
        pending = bytearray()
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"{what} is larger than the limit of {limit} bytes")
            pending += chunk
            if len(pending) >= WRITE_BATCH:
                data, pending = bytes(pending), bytearray()
                await asyncio.to_thread(file.write, data)
        await asyncio.to_thread(_finish_spool, file, bytes(pending))
        yield FileSource(file)
    finally:
        await asyncio.to_thread(file.close)


def _finish_spool(file: IO[bytes], tail: bytes) -> None:
    file.write(tail)
    file.flush()
    file.seek(0)


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body, piece by piece as it arrives."""
    async for chunk in request.content.iter_any():
        yield chunk
