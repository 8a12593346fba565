"""The form of ``POST|PATCH /realtime-services/…`` (API.md §5.12): the file part ``model``
and the fields ``description`` and ``operationId``, as the 9.3 swagger and Microsoft's SDK
send them. The model is spooled to disk as it arrives (413 past the limit), never held in
memory; the SDK's ``blob`` prefix in front of it is taken off on the way."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import BodyPartReader, web

from controller.errors import BadRequestError, PayloadTooLargeError
from controller.http.streams import spool
from controller.runtime.blobs import FileSource

#: what Microsoft's SDK insists a serialized model starts with (revoscalepy's format);
#: neither a pickle nor an ONNX file can start with it, so it is dropped where present
SDK_PREFIX = b"blob"
#: longest text field accepted: a description, an operation name
TEXT_MAX = {"description": 64 * 1024, "operationId": 128}


@dataclass
class RealtimeForm:
    """What the form held: the model (``None`` when it had no ``model`` part) and the
    text fields present (``None``: an empty field, as the SDK sends an unset one)."""

    model: FileSource | None = None
    #: SHA-256 of the model as kept (without the SDK's prefix), for the audit trail
    sha256: str | None = None
    description: str | None = None
    operation_id: str | None = None
    present: set[str] = field(default_factory=set)


@contextlib.asynccontextmanager
async def read_form(
    request: web.Request, model_max: int, spool_dir: Path
) -> AsyncIterator[RealtimeForm]:
    """The form, its model on disk until the block ends."""
    if not request.content_type.startswith("multipart/"):
        raise BadRequestError(
            "send the model as multipart/form-data: a file part named 'model', and the "
            "optional fields 'description' and 'operationId'"
        )
    form = RealtimeForm()
    async with contextlib.AsyncExitStack() as stack:
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise BadRequestError("the form may not nest multipart bodies")
                if part.name == "model":
                    if form.model is not None:
                        raise BadRequestError("the form has two parts named 'model'")
                    digest = hashlib.sha256()
                    form.model = await stack.enter_async_context(
                        spool(_model_chunks(part, digest), spool_dir, model_max, "the model")
                    )
                    form.sha256 = digest.hexdigest()
                    form.present.add("model")
                elif part.name in TEXT_MAX:
                    text = await _text(part, part.name, TEXT_MAX[part.name])
                    if part.name in form.present:
                        raise BadRequestError(f"the form has two fields named '{part.name}'")
                    form.present.add(part.name)
                    if part.name == "description":
                        form.description = text
                    else:
                        form.operation_id = _operation(text)
                else:  # another client's extra: read past it, keep nothing
                    while await part.read_chunk(1 << 16):
                        pass
        except (ValueError, AssertionError, aiohttp.ClientError) as exc:  # malformed multipart
            raise BadRequestError(f"the multipart/form-data body is malformed: {exc}") from None
        yield form


async def _model_chunks(part: BodyPartReader, digest: Any) -> AsyncIterator[bytes]:
    """The part's bytes, without the SDK's prefix in front (``digest`` sees them all)."""
    head = b""
    while len(head) < len(SDK_PREFIX):
        chunk = await part.read_chunk(1 << 20)
        if not chunk:
            break
        head += chunk
    if head.startswith(SDK_PREFIX):
        head = head[len(SDK_PREFIX) :]
    if head:
        digest.update(head)
        yield head
    while chunk := await part.read_chunk(1 << 20):
        digest.update(chunk)
        yield chunk


async def _text(part: BodyPartReader, name: str, limit: int) -> str | None:
    data = bytearray()
    while chunk := await part.read_chunk(1 << 16):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLargeError(f"the field '{name}' is longer than {limit} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError(f"the field '{name}' is not UTF-8 text") from None
    if "\0" in text:
        raise BadRequestError(f"the field '{name}' holds a NUL character")
    return text or None


def _operation(text: str | None) -> str | None:
    if text is not None and not text.isidentifier():
        raise BadRequestError(f"{text[:100]!r} is not a valid operation name")
    return text
