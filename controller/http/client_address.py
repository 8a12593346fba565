"""Which address a request came from, believing ``X-Forwarded-For`` only from trusted proxies.

``O16N_TRUSTED_PROXIES`` lists the networks of the reverse proxies in front of the
controller. When the peer is one of them, the client is the rightmost address of
``X-Forwarded-For`` that is not itself a trusted proxy (each proxy appends the address it
saw, so everything left of the first untrusted hop may be forged). From any other peer the
header is ignored: anyone can send it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

from controller.settings import Network


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client's address: ``peer``, or the rightmost untrusted hop of ``forwarded_for``
    when ``peer`` is a trusted proxy."""
    address = peer or "?"
    if not forwarded_for or not trusted or not _trusted(address, trusted):
        return address
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address  # a malformed list: believe only the peer
        address = hop
        if not _trusted(hop, trusted):
            break
    return address


def request_address(request: web.BaseRequest, trusted: Sequence[Network]) -> str:
    """:func:`client_address` of ``request``. Every ``X-Forwarded-For`` line counts, in
    order, as one list: a proxy may add a line of its own after the client's (HAProxy
    does), and the first line alone would be the client's forgery."""
    lines = request.headers.getall("X-Forwarded-For", [])
    return client_address(request.remote, ", ".join(lines) or None, trusted)
