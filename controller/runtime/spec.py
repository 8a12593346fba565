"""A typed container spec with hardened defaults, built from settings, never from user input.

Names that reach labels or container names are validated here; the environment is an
allow-list (never copied from the controller's); user, entrypoint, working directory and
environment are always set by us, because a snapshot image is an image a user built and
nothing in it (its ``/etc/passwd``, its ``ENTRYPOINT``) is trusted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from controller.settings import Settings

WORKDIR = "/work"
SOCKET_MOUNT = "/run/o16n"
AGENT_PYTHON = "/opt/o16n/bin/python"
#: Where every container finds the agent: the controller's bundle (``agent_bundle``),
#: mounted read-only. Never the image's: an image keeps the agent of the day it was made.
AGENT_MOUNT = "/opt/o16n-agent"
#: The agent's command line: ``-I`` (no PYTHON* variables, no user site, no script or
#: working directory on the path), then the mount first on the path and any ``o16n_agent``
#: a ``.pth`` file of the image imported dropped, so nothing in an image (an old agent in
#: its site-packages, say) shadows the mounted one.
AGENT_COMMAND = (
    AGENT_PYTHON,
    "-I",
    "-c",
    "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
    "[sys.modules.pop(m) for m in list(sys.modules) if m.partition('.')[0] == 'o16n_agent']; "
    "runpy.run_module('o16n_agent', run_name='__main__', alter_sys=True)",
    AGENT_MOUNT,
)
LABEL_PREFIX = "o16n."

Kind = Literal["session", "service", "warm", "probe"]

ALLOWED_ENV = frozenset(
    {
        "HOME",
        "LANG",
        "LC_ALL",
        "TZ",
        "PYTHONUNBUFFERED",
        "PYTHONHASHSEED",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "MPLCONFIGDIR",
        "O16N_CONTAINER_KEY",
        "O16N_AGENT_REPLY_MAX",
    }
)
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9._:@-]{0,200}$")


class ContainerSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    image: str = Field(pattern=r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?$|^sha256:[0-9a-f]{64}$")
    key: str = Field(pattern=r"^[0-9a-f]{12,32}$")
    kind: Kind
    instance: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    owner: str = ""
    ident: str = ""
    #: the host directory of the agent bundle, mounted read-only at ``AGENT_MOUNT``
    agent_dir: Path
    #: where to run it (one of ``ContainerRuntime.places``); ``None``: the runtime chooses
    place: str | None = Field(None, pattern=r"^[a-z0-9]{0,32}$")
    user: str = Field(pattern=r"^\d+:\d+$")
    environment: dict[str, str]
    network_mode: str = Field(pattern=r"^[a-z0-9_-]+$")
    read_only: bool
    memory: int = Field(gt=0)
    cpus: float = Field(gt=0)
    pids: int = Field(gt=0)
    nofile: int = Field(gt=0)
    fsize: int = Field(gt=0)
    work_size: int = Field(gt=0)
    tmp_size: int = Field(gt=0)

    @field_validator("environment")
    @classmethod
    def _allowed_env(cls, value: dict[str, str]) -> dict[str, str]:
        extra = set(value) - ALLOWED_ENV
        if extra:
            raise ValueError(f"environment variables not allowed: {sorted(extra)}")
        return value

    @field_validator("owner", "ident")
    @classmethod
    def _label_safe(cls, value: str) -> str:
        if not _LABEL_VALUE.match(value):
            raise ValueError(f"not a safe label value: {value!r}")
        return value

    @property
    def name(self) -> str:
        return f"{self.instance}-{self.kind}-{self.key}"

    @property
    def labels(self) -> dict[str, str]:
        return {
            LABEL_PREFIX + "instance": self.instance,
            LABEL_PREFIX + "kind": self.kind,
            LABEL_PREFIX + "key": self.key,
            LABEL_PREFIX + "owner": self.owner,
            LABEL_PREFIX + "id": self.ident,
        }

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        image: str,
        key: str,
        kind: Kind,
        agent_dir: Path,
        owner: str = "",
        ident: str = "",
        place: str | None = None,
    ) -> ContainerSpec:
        uid = settings.container_user.split(":")[0]
        return cls(
            image=image,
            key=key,
            kind=kind,
            instance=settings.instance,
            owner=owner,
            ident=ident,
            agent_dir=agent_dir,
            place=place,
            user=settings.container_user,
            environment={
                "HOME": WORKDIR,
                "LANG": "C.UTF-8",  # the agent runs with -I: PYTHON* variables would not apply
                "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
                "NUMEXPR_NUM_THREADS": "1",
                "MPLCONFIGDIR": f"/tmp/mpl-{uid}",  # noqa: S108 (container's private tmpfs)
                "O16N_CONTAINER_KEY": key,
                # the agent turns a larger reply into an error rather than break the link
                "O16N_AGENT_REPLY_MAX": str(int(settings.agent_reply_max_bytes)),
            },
            network_mode=settings.container_network,
            read_only=settings.container_read_only,
            memory=int(settings.container_memory),
            cpus=settings.container_cpus,
            pids=settings.container_pids,
            nofile=settings.container_nofile,
            fsize=int(settings.container_fsize),
            work_size=int(settings.container_work_size),
            tmp_size=int(settings.container_tmp_size),
        )
