"""Request bodies of the services API, and the strict patterns names must match."""

from __future__ import annotations

import re
from typing import Literal

from o16n_agent.codec import TYPES, canonical_type
from pydantic import BaseModel, ConfigDict, Field, field_validator

from controller.errors import BadRequestError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
FILE_NAME = re.compile(r"^[^/\\\0]{1,255}$")


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise BadRequestError(
            f"invalid service name {name[:100]!r}: use letters, digits, '_', '.' or '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return name


def check_version(version: str) -> str:
    if not VERSION.match(version):
        raise BadRequestError(
            f"invalid service version {version[:100]!r}: use letters, digits, '_', '.' or '-' "
            "(at most 64, starting with a letter or digit)"
        )
    return version


class ParameterDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=256)
    type: str = Field(min_length=1, max_length=32)

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value.isidentifier():
            raise ValueError(f"{value!r} is not a valid Python name")
        return value

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if canonical_type(value) is None:
            raise ValueError(f"unknown type {value!r} (use one of: {', '.join(TYPES)})")
        return value


class PublishWebServiceRequest(BaseModel):
    """Body of POST and PATCH. On PATCH only the fields present change (``[]`` clears)."""

    model_config = ConfigDict(extra="ignore")

    code: str | None = Field(None, max_length=8 * 1024 * 1024)
    snapshotId: str | None = Field(None, max_length=64)
    initCode: str | None = Field(None, max_length=8 * 1024 * 1024)
    description: str | None = Field(None, max_length=64 * 1024)
    operationId: str | None = Field(None, max_length=128)
    inputParameterDefinitions: list[ParameterDefinition] | None = None
    outputParameterDefinitions: list[ParameterDefinition] | None = None
    runtimeType: str | None = Field(None, max_length=32)
    outputFileNames: list[str] | None = None
    isolation: Literal["shared", "fork"] | None = None

    @field_validator("runtimeType")
    @classmethod
    def _python(cls, value: str | None) -> str | None:
        if value is not None and value.lower() != "python":
            raise ValueError(
                f"runtimeType {value!r} is not available: this server publishes Python services"
            )
        return value

    @field_validator("operationId")
    @classmethod
    def _alias(cls, value: str | None) -> str | None:
        if value is not None and value != "" and not value.isidentifier():
            raise ValueError(f"{value!r} is not a valid operation name")
        return value or None

    @field_validator("inputParameterDefinitions", "outputParameterDefinitions")
    @classmethod
    def _unique(cls, value: list[ParameterDefinition] | None) -> list[ParameterDefinition] | None:
        names = [p.name for p in value or []]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"parameter names must be unique: {duplicates}")
        return value

    @field_validator("outputFileNames")
    @classmethod
    def _files(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not FILE_NAME.match(name) or name in (".", ".."):
                raise ValueError(f"{name[:100]!r} is not a plain file name")
        return value


class PoolRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    InitialPoolSize: int | None = Field(None, ge=0)
    MaxPoolSize: int | None = Field(None, ge=1)
