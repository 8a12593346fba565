"""An agent listener closing removes its own socket file, never the one another
controller of the group bound at the same path after taking the session over."""

from __future__ import annotations

import tempfile
from pathlib import Path

from controller.runtime.agent_link import listener


async def test_closing_leaves_a_socket_another_listener_bound_at_the_path() -> None:
    folder = Path(tempfile.mkdtemp(prefix="o16n-l-", dir="/tmp"))
    endpoint = f"unix:{folder / 'agent.sock'}"
    old, new = listener(endpoint, 1024, 1024), listener(endpoint, 1024, 1024)
    try:
        await old.start()
        await new.start()  # the heir: the old file goes, its own is bound in its place
        await old.close()
        assert (folder / "agent.sock").exists()
        await new.close()
        assert not (folder / "agent.sock").exists()
    finally:
        await old.close()
        await new.close()
        for leftover in folder.iterdir():
            leftover.unlink()
        folder.rmdir()
