"""Request and response bodies of the sessions API (wire names as in the 9.3 swagger)."""

from __future__ import annotations

import keyword
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from controller.errors import BadRequestError, NotFoundError

MAX_CODE = 8 * 1024 * 1024
SESSION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class CreateSessionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(None, max_length=256)
    snapshotId: str | None = Field(None, max_length=64)
    runtimeType: str | None = Field(None, max_length=32)

    @field_validator("runtimeType")
    @classmethod
    def _python_only(cls, value: str | None) -> str | None:
        if value is not None and value.lower() != "python":
            raise ValueError(
                f"runtimeType {value!r} is not available: this server runs Python sessions only"
            )
        return value


class WorkspaceObject(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=256)
    value: Any = None

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not is_object_name(value):
            raise ValueError(f"{value!r} is not a valid Python name {_RULE}")
        return value


class ExecuteRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str = Field(max_length=MAX_CODE)
    inputParameters: list[WorkspaceObject] | None = None
    outputParameters: list[str] | None = None

    @field_validator("outputParameters")
    @classmethod
    def _identifiers(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not is_object_name(name):
                raise ValueError(f"{name!r} is not a valid Python name {_RULE}")
        return value


class ExecuteReply(BaseModel):
    """What an agent answers to ``execute``; checked, because the agent is untrusted."""

    model_config = ConfigDict(extra="ignore", strict=True)

    success: bool
    error: str = Field(max_length=1 << 20)
    cancelled: bool = False
    console: str
    #: not bounded here: a reply's size is (``O16N_AGENT_REPLY_MAX_BYTES``), and
    #: :func:`changed_files` cuts the list; an agent of an older image sends it whole
    changed_files: list[str]
    changed_total: int | None = Field(None, ge=0)
    outputs: list[WorkspaceObject]


class CollectedReply(ExecuteReply):
    """What an agent answers to ``execution_result``: an ``execute`` reply plus its code."""

    code: str = Field(max_length=MAX_CODE)


#: Names of changed files a response lists; ``changedFilesTotal`` counts the rest.
CHANGED_FILES_MAX = 1000
CHANGED_TOTAL_DOC = (
    "Present only when more files changed than changedFiles lists (at most 1,000 names): "
    "how many changed in all."
)


def changed_files(names: list[str], total: int | None) -> dict[str, Any]:
    """``changedFiles`` (the first :data:`CHANGED_FILES_MAX` names) and, when some were
    left out, ``changedFilesTotal``: unzipping a data set changes tens of thousands of files,
    and a response listing them all helps no one."""
    count = max(len(names), total or 0)
    shown: dict[str, Any] = {"changedFiles": names[:CHANGED_FILES_MAX]}
    if count > len(shown["changedFiles"]):
        shown["changedFilesTotal"] = count
    return shown


def failed_result(message: str, outputs: Any, **extra: Any) -> dict[str, Any]:
    """A run's result when its code could not answer (``success: false`` saying why): an
    ``ExecuteResponse`` (``outputs`` a list) or, with ``extra`` ``outputFiles``, a
    ``WebServiceResult`` (``outputs`` a mapping)."""
    return {
        "success": False,
        "errorMessage": message,
        "consoleOutput": "",
        "changedFiles": [],
        "outputParameters": outputs,
        **extra,
    }


def check_session_id(session_id: str) -> str:
    """Session ids are GUIDs; anything else cannot name a session."""
    if not SESSION_ID.match(session_id):
        raise NotFoundError(f"no session '{session_id[:100]}'")
    return session_id


_RULE = "(an identifier that is not a keyword nor a __dunder__ name)"


def is_object_name(name: str) -> bool:
    """A name a workspace object may have: an identifier, not a keyword (``None``, ``class``)
    and not a ``__dunder__`` name, which belongs to Python itself (``__builtins__``:
    replacing it would change what every later statement of the session means)."""
    return (
        name.isidentifier()
        and not keyword.iskeyword(name)
        and not (name.startswith("__") and name.endswith("__"))
        and len(name) <= 256
    )


def check_object_name(name: str) -> str:
    if not is_object_name(name):
        raise BadRequestError(f"{name[:100]!r} is not a valid workspace object name {_RULE}")
    return name


def check_file_name(name: str) -> str:
    """Plain file names only: no path separators, no '..', no NUL, at most 255 bytes."""
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or len(name.encode("utf-8", "surrogatepass")) > 255
    ):
        raise BadRequestError(
            f"{name[:100]!r} is not a valid file name (no paths, '..' or NUL; at most 255 bytes)"
        )
    return name
