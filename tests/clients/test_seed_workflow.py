"""The seed workflow (tests/clients/seed.py) on one app."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.clients.seed import seed_workflow

pytestmark = pytest.mark.docker


async def test_the_seed_workflow(client: TestClient[Any, Any]) -> None:
    await seed_workflow(client)
