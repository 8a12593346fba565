"""A warm pool hands out only containers of places that take new containers now: a drained
(or lost) compute node's warm containers wait there, and a new session gets a container
started where placement says rather than one on a drained node."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.runtime.containers import ContainerHandle
from controller.runtime.warm_pool import WarmPool


@dataclass
class Link:
    closed: bool = False


@dataclass
class Warm:
    handle: ContainerHandle
    link: Link = field(default_factory=Link)

    @property
    def key(self) -> str:
        return self.handle.key


class Runtime:
    def __init__(self, places: list[str]) -> None:
        self.taking = places

    def places(self) -> list[str]:
        return self.taking


class Sandboxes:
    def __init__(self, places: list[str]) -> None:
        self.runtime = Runtime(places)
        self.served: list[str] = []
        self.destroyed: list[str] = []

    def serve(self, sandbox: Any, kind: str) -> None:
        self.served.append(sandbox.key)

    async def destroy(self, sandbox: Any) -> None:
        self.destroyed.append(sandbox.key)


def warm(key: str, node: str) -> Warm:
    state = {"node": node} if node else {}
    return Warm(ContainerHandle(key, "warm", "", "sessions", "unix:/x", state=state))


async def test_a_drained_node_s_warm_container_is_not_handed_out() -> None:
    sandboxes = Sandboxes(places=["nb"])  # the local node and "na" drained
    pool = WarmPool(sandboxes, 2, "sessions")  # type: ignore[arg-type]
    pool._ready.extend([warm("l1", ""), warm("a1", "na")])  # type: ignore[list-item]
    assert await pool.take() is None  # placement starts one on "nb"
    assert pool.ready == 2 and sandboxes.destroyed == []  # they wait for an undrain

    pool._ready.append(warm("b1", "nb"))  # type: ignore[arg-type]
    taken = await pool.take()
    assert taken is not None and taken.key == "b1" and sandboxes.served == ["b1"]

    sandboxes.runtime.taking = ["na", ""]  # undrained again, "na" the least loaded
    assert (await pool.take()).key == "a1"  # type: ignore[union-attr]
