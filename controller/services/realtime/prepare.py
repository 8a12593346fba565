"""Checking (and converting) an uploaded model, in a single-use hardened container.

The container gets the upload as it came (ONNX, or a pickled scikit-learn estimator or
pipeline, which it converts with skl2onnx) and answers with the ONNX graph to serve and
its schema, or with why the model is refused (a 400). Loading a pickle runs its code and
parsing a graph is parsing hostile input: both happen there, never here. The container
is removed afterwards, whatever happened in it; what it sent is bounded and checked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from controller.errors import AgentGone, AgentProtocolError, BadRequestError
from controller.runtime.agent_link import AgentTimeout
from controller.runtime.blobs import FileSource
from controller.runtime.sandbox import Sandbox
from controller.runtime.sandboxes import Sandboxes
from controller.runtime.warm_pool import WarmPool
from controller.services.realtime.model import ModelSchema, parse_schema

#: longest refusal message passed on to the caller
MESSAGE_MAX = 2000


class FileSink:
    """A reply blob into a temporary file of ``directory`` (the agent link's ``BlobSink``)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.size: int | None = None

    async def start(self, size: int) -> None:
        self.size = size

    async def write(self, chunk: bytes) -> None:
        await asyncio.to_thread(self._file.write, chunk)


class ModelPreparer:
    def __init__(
        self,
        sandboxes: Sandboxes,
        warm: WarmPool | None,
        *,
        model_max: int,
        timeout: float,
        spool_dir: Path,
    ) -> None:
        self._sandboxes = sandboxes
        self._warm = warm
        self._model_max = model_max
        self._timeout = timeout
        self._spool_dir = spool_dir

    @contextlib.asynccontextmanager
    async def prepare(
        self, upload: FileSource, owner: str
    ) -> AsyncIterator[tuple[ModelSchema, Path]]:
        """The model's schema and its ONNX graph in a file that lasts until the block ends;
        ``BadRequestError`` saying why when the model is refused (the agent refuses with
        an ``invalid`` error), ``PayloadTooLargeError`` when its ONNX graph is too large."""
        await asyncio.to_thread(self._spool_dir.mkdir, mode=0o700, parents=True, exist_ok=True)
        fd, name = await asyncio.to_thread(tempfile.mkstemp, suffix=".onnx", dir=self._spool_dir)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as file:
                sink = FileSink(file)
                reply = await self._ask(upload, owner, sink)
                await asyncio.to_thread(_sync, file)  # on disk before a row names it
            try:
                schema = parse_schema(reply.get("schema"))
            except AgentProtocolError as exc:  # a model the controller cannot take
                raise BadRequestError(f"the model was refused: {exc.message}") from None
            if not sink.size:
                raise BadRequestError("the model check produced no ONNX graph")
            yield schema, path
        finally:
            await asyncio.to_thread(_unlink, path)

    async def _ask(self, upload: FileSource, owner: str, sink: FileSink) -> dict[str, object]:
        sandbox: Sandbox | None = None
        if self._warm is not None:
            sandbox = await self._warm.take()
        if sandbox is None:
            sandbox = await self._sandboxes.launch("service", owner=owner, ident="model-check")
        try:
            reply, _ = await sandbox.call(
                "model_prepare",
                {},
                blob=upload,
                timeout=self._timeout,
                blob_limit=self._model_max,
                sink=sink,
            )
        except BadRequestError as exc:  # the agent's refusal, saying why
            raise BadRequestError(f"the model was refused: {exc.message}") from None
        except AgentTimeout:
            raise BadRequestError(
                f"the model could not be checked within {self._timeout:g} s "
                "(a pickle that runs code as it loads, say)"
            ) from None
        except AgentGone:
            raise BadRequestError(
                "the container checking the model ended while loading it "
                "(the pickle may end the process it is loaded in)"
            ) from None
        finally:
            await self._sandboxes.destroy(sandbox)
        return reply


def _sync(file: IO[bytes]) -> None:
    file.flush()
    os.fsync(file.fileno())


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
