from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from controller.audit.log import AUDIT
from controller.store.audit import AuditEntry, AuditQuery
from controller.store.db import DB


async def audit_entries(client: TestClient[Any, Any], **query: Any) -> list[AuditEntry]:
    """Every audit entry matching ``query``, newest first (written first)."""
    return await client.app[AUDIT].page(AuditQuery(limit=10_000, **query))


async def audit_rows_text(client: TestClient[Any, Any]) -> str:
    """Every column of every stored audit row, as one text (to search for secrets)."""
    await client.app[AUDIT].flush()
    rows = await client.app[DB].fetchall("SELECT * FROM audit")
    return "\n".join(" ".join(str(v) for v in tuple(r)) for r in rows)


async def create_user(
    client: TestClient[Any, Any],
    headers: dict[str, str],
    name: str,
    role: str = "Contributor",
    password: str = "password-123",
) -> dict[str, Any]:
    resp = await client.post(
        "/admin/users", json={"name": name, "role": role, "password": password}, headers=headers
    )
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body
