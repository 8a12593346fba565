"""Compute nodes: the Docker engines an instance runs containers on, named as Docker names them.

An entry is an engine address in the ``DOCKER_HOST`` convention: ``unix:///path/docker.sock``
(an engine on this machine) or ``ssh://user@host[:port]`` (an engine reached over SSH).
The local engine is the default node. This module only parses and names them; the engine
that reaches them implements :class:`NodeControl` (``Engine.nodes``), which the
``/computenodes`` routes, ``/status`` and the admin endpoints call.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

#: The name of the engine this controller finds by ``DOCKER_HOST`` (or Docker's default).
LOCAL = "local"

_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$", re.IGNORECASE)
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$|^\[[0-9a-fA-F:.]+\]$")
_PATH = re.compile(r"^/[A-Za-z0-9._/@+-]{1,250}$")


class NodeAddressError(ValueError):
    """An entry that is not a Docker engine address o16n can reach (the message says why)."""


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """One compute node's engine address, normalised (``entry`` is what is stored and shown)."""

    scheme: Literal["unix", "ssh"]
    entry: str
    path: str = ""  # unix: the engine's socket
    user: str = ""  # ssh
    host: str = ""  # ssh
    port: int = 22  # ssh

    @property
    def name(self) -> str:
        """A short, stable, path-safe name of the node: in container labels, directory names
        and metrics (``n`` and 10 hex digits of the entry's hash)."""
        return "n" + hashlib.sha256(self.entry.encode()).hexdigest()[:10]


def parse_node(entry: str) -> NodeAddress:
    """Parse one ``/computenodes`` entry or ``O16N_COMPUTE_NODES`` item.

    Raises :class:`NodeAddressError` naming what is wrong: ML Server's ``http://`` node URIs
    and ranges are refused (o16n's nodes are Docker engines, not ML Server compute nodes),
    as are ``tcp://`` engines (the Docker API unauthenticated on the network)."""
    text = entry.strip()
    if not text or len(text) > 300:
        raise NodeAddressError("a compute node entry must be 1 to 300 characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise NodeAddressError(f"{_shown(text)!r} is not a URI: {exc}") from None
    if parts.password is not None:  # said without it: messages reach logs and the audit
        raise NodeAddressError(f"{_shown(text)!r}: no passwords in node addresses (use a key)")
    text = _shown(text)
    if parts.scheme == "unix":
        if parts.netloc or parts.query or parts.fragment or not _PATH.match(parts.path):
            raise NodeAddressError(
                f"{text!r}: a local engine is unix:///absolute/path/to/docker.sock"
            )
        if "/../" in parts.path + "/" or "/./" in parts.path + "/":
            raise NodeAddressError(f"{text!r}: the socket path must be normalised")
        return NodeAddress("unix", f"unix://{parts.path}", path=parts.path)
    if parts.scheme == "ssh":
        user, host = parts.username or "", parts.hostname or ""
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise NodeAddressError(f"{text!r}: an SSH engine is ssh://user@host[:port], no path")
        if not _USER.match(user):
            raise NodeAddressError(f"{text!r}: an SSH engine names its user: ssh://user@host")
        shown = f"[{host}]" if ":" in host else host
        if not _HOST.match(shown):
            raise NodeAddressError(f"{text!r}: {host!r} is not a host name or address")
        port = 22 if port is None else port
        if not 0 < port < 65536:
            raise NodeAddressError(f"{text!r}: the port must be 1 to 65535")
        normal = f"ssh://{user}@{shown.lower()}" + ("" if port == 22 else f":{port}")
        return NodeAddress("ssh", normal, user=user, host=host.lower(), port=port)
    if parts.scheme in ("http", "https"):
        raise NodeAddressError(
            f"{text!r}: o16n's compute nodes are Docker engines (unix:///path/docker.sock or "
            "ssh://user@host[:port]), not ML Server compute node URIs"
        )
    if parts.scheme == "tcp":
        raise NodeAddressError(
            f"{text!r}: tcp:// engines are not accepted (reach a remote engine over ssh://)"
        )
    raise NodeAddressError(
        f"{text!r}: a compute node is unix:///path/docker.sock or ssh://user@host[:port]"
    )


def _shown(text: str) -> str:
    """``text`` with whatever is between ``://`` and ``@`` past a ``:`` hidden (a password)."""
    scheme, sep, rest = text.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if sep and at and ":" in userinfo:
        return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}"
    return text


class NodeControl(Protocol):
    """What an engine with several nodes offers the operator's endpoints."""

    def entries(self) -> list[str]:
        """The nodes' entries as configured (the local node not among them)."""

    async def apply(self, entries: list[NodeAddress]) -> None:
        """Make these the remote nodes: connect new ones, let go of removed ones (their
        containers are drained first: sessions end, service containers are replaced)."""

    async def describe(self) -> list[dict[str, Any]]:
        """Each node's ``name``, ``entry``, ``state`` (``connecting``, ``up``, ``lost``),
        ``draining`` (a flag beside the state), ``version``, ``containers`` (this
        instance's, by kind), ``load`` and the last ``error``; the local node first."""

    async def drain(self, name: str, draining: bool) -> None:
        """Stop (or resume) placing new containers on the node ``name`` (its name, never
        its entry); raises ``NotFoundError``."""
