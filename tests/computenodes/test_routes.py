"""``/computenodes``: Owner only; entries checked before anything changes; replace, add and
remove keep the order and collapse duplicates; the engine gets every stored entry after
each change, and a change it refuses leaves the store as it was; every write audited."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.runtime.nodes import parse_node
from controller.settings import Settings
from controller.store.db import DB
from controller.store.nodes import NodesRepo
from tests.admin.conftest import audit_entries
from tests.computenodes.conftest import RecordingNodes, node_settings
from tests.conftest import bearer, login, user_headers

A, B, C = "ssh://o16n@node-a", "ssh://o16n@node-b:2222", "unix:///run/docker-c.sock"


async def nodes_of(client: TestClient[Any, Any], headers: dict[str, str]) -> list[str]:
    resp = await client.get("/computenodes", headers=headers)
    assert resp.status == 200, await resp.text()
    body: dict[str, list[str]] = await resp.json()
    return body["computeNodes"]


async def change(
    client: TestClient[Any, Any], method: str, headers: dict[str, str], body: Any
) -> tuple[int, Any]:
    resp = await client.request(method, "/computenodes", json=body, headers=headers)
    return resp.status, await resp.json()


async def test_replace_add_remove(
    client: TestClient[Any, Any], admin_headers: dict[str, str], recorder: RecordingNodes
) -> None:
    assert await nodes_of(client, admin_headers) == []
    status, body = await change(client, "POST", admin_headers, {"entries": [B, A, " " + B]})
    assert (status, body) == (200, {"computeNodes": [B, A]})
    # the key matched regardless of case, entries normalised, duplicates collapsed
    status, body = await change(
        client, "PUT", admin_headers, {"Entries": ["ssh://o16n@NODE-A:22", C, C]}
    )
    assert (status, body) == (200, {"computeNodes": [B, A, C]})
    status, body = await change(client, "DELETE", admin_headers, {"entries": [B]})
    assert (status, body) == (200, {"computeNodes": [A, C]})
    assert await nodes_of(client, admin_headers) == [A, C]
    assert recorder.applied == [[], [B, A], [B, A, C], [A, C]]  # at start, then each change
    status, body = await change(client, "POST", admin_headers, {"entries": []})
    assert (status, body) == (200, {"computeNodes": []})
    assert recorder.applied[-1] == []


async def test_only_owners(
    client: TestClient[Any, Any], admin_headers: dict[str, str], recorder: RecordingNodes
) -> None:
    await change(client, "POST", admin_headers, {"entries": [A]})
    for role in ("Contributor", "Reader"):
        headers = await user_headers(client, f"user-{role.lower()}", role)
        resp = await client.get("/computenodes", headers=headers)
        assert resp.status == 403, await resp.text()
        for method in ("POST", "PUT", "DELETE"):
            status, body = await change(client, method, headers, {"entries": [B]})
            assert status == 403 and body["exceptionType"] == "ForbiddenError"
    for method in ("GET", "POST", "PUT", "DELETE"):
        resp = await client.request(method, "/computenodes", json={"entries": [B]})
        assert resp.status == 401
    assert await nodes_of(client, admin_headers) == [A]
    assert recorder.applied == [[], [A]]


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"entries": [A, "http://1.1.1.1:12805"]}, "entries[1]"),
        ({"entries": ["tcp://10.0.0.1:2375"]}, "tcp://"),
        ({"entries": ["ssh://node-a"]}, "names its user"),
        ({"entries": ["ssh://o16n:secret@node-a"]}, "no passwords"),
        ({"entries": ["not a node"]}, "entries[0]"),
        ({"entries": [""]}, "entries[0]"),
        ({"entries": [A, 3]}, "entries.1"),
        ({"entries": A}, "entries"),
        ({"nodes": [A]}, "entries"),
        ([A], "JSON object"),
        ({"entries": [A] * 257}, "entries"),
    ],
)
async def test_bad_bodies_change_nothing(
    client: TestClient[Any, Any],
    admin_headers: dict[str, str],
    recorder: RecordingNodes,
    body: Any,
    said: str,
) -> None:
    await change(client, "POST", admin_headers, {"entries": [C]})
    for method in ("POST", "PUT", "DELETE"):
        status, answer = await change(client, method, admin_headers, body)
        assert status == 400, answer
        assert said in answer["message"] and answer["exceptionType"]
        assert "secret" not in answer["message"]  # a password is never said back
    assert await nodes_of(client, admin_headers) == [C]
    assert recorder.applied == [[], [C]]


async def test_removing_an_entry_not_listed_is_400_and_changes_nothing(
    client: TestClient[Any, Any], admin_headers: dict[str, str], recorder: RecordingNodes
) -> None:
    await change(client, "POST", admin_headers, {"entries": [A, B]})
    status, body = await change(client, "DELETE", admin_headers, {"entries": [A, C]})
    assert status == 400 and C in body["message"] and A not in body["message"]
    assert await nodes_of(client, admin_headers) == [A, B]
    assert recorder.applied == [[], [A, B]]


async def test_a_change_the_engine_refuses_is_rolled_back(
    client: TestClient[Any, Any], admin_headers: dict[str, str], recorder: RecordingNodes
) -> None:
    await change(client, "POST", admin_headers, {"entries": [A, B]})
    kept = await NodesRepo(client.app[DB]).nodes()
    recorder.refuse = C
    for method, entries in (("PUT", [C]), ("POST", [C, A])):
        status, body = await change(client, method, admin_headers, {"entries": entries})
        assert status == 503 and "cannot reach" in body["message"], body
        assert await NodesRepo(client.app[DB]).nodes() == kept
    # the engine was handed the old list back after each refusal
    assert recorder.applied == [[], [A, B], [A, B], [A, B]]
    entries = await audit_entries(client, action="computenodes.*")
    assert [(e.action, e.outcome) for e in entries][:2] == [
        ("computenodes.set", "failed"),
        ("computenodes.add", "failed"),
    ]
    assert entries[0].detail == {"entries": [C, A]}


async def test_concurrent_changes_do_not_interleave(
    client: TestClient[Any, Any], admin_headers: dict[str, str], recorder: RecordingNodes
) -> None:
    entries = [f"ssh://o16n@node-{i}" for i in range(8)]
    results = await asyncio.gather(
        *(change(client, "PUT", admin_headers, {"entries": [e]}) for e in entries)
    )
    assert all(status == 200 for status, _ in results)
    final = await nodes_of(client, admin_headers)
    assert sorted(final) == sorted(entries)
    # each apply saw one more entry than the one before: no change was lost between
    # storing and applying
    assert [len(a) for a in recorder.applied] == list(range(9))
    assert recorder.applied[-1] == final


async def test_writes_are_audited_with_the_list_before_and_after(
    client: TestClient[Any, Any], admin_headers: dict[str, str], recorder: RecordingNodes
) -> None:
    await change(client, "POST", admin_headers, {"entries": [A]})
    await change(client, "PUT", admin_headers, {"entries": [B]})
    await change(client, "DELETE", admin_headers, {"entries": [A]})
    await change(client, "PUT", admin_headers, {"entries": ["ssh://o16n:hunter22@x"]})
    reader = await user_headers(client, "rita", "Reader")
    await change(client, "POST", reader, {"entries": []})
    entries = list(reversed(await audit_entries(client, action="computenodes.*")))
    assert [(e.action, e.actor, e.outcome, e.target) for e in entries] == [
        ("computenodes.set", "admin", "ok", "computenodes"),
        ("computenodes.add", "admin", "ok", "computenodes"),
        ("computenodes.remove", "admin", "ok", "computenodes"),
        ("computenodes.add", "admin", "failed", "computenodes"),
        ("computenodes.set", "rita", "denied", "computenodes"),
    ]
    assert entries[0].detail == {"before": [], "after": [A]}
    assert entries[1].detail == {"before": [A], "after": [A, B]}
    assert entries[2].detail == {"before": [A, B], "after": [B]}
    assert entries[3].detail == {"entries": ["<invalid>"]}  # never the password
    assert "hunter22" not in str([e.detail for e in entries])
    assert parse_node(B).entry == B


async def test_an_engine_without_nodes_takes_only_an_empty_list(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))  # the fake engine as it is
    headers = bearer((await login(client))["access_token"])
    status, body = await change(client, "POST", headers, {"entries": [A]})
    assert status == 400 and "this machine only" in body["message"]
    status, body = await change(client, "POST", headers, {"entries": []})
    assert (status, body) == (200, {"computeNodes": []})
    assert await nodes_of(client, headers) == []


async def test_ssh_nodes_need_pinned_host_keys(
    aiohttp_client: Any, data_dir: Path, recorder: RecordingNodes
) -> None:
    client = await aiohttp_client(create_app(node_settings(data_dir, ssh_known_hosts=None)))
    headers = bearer((await login(client))["access_token"])
    status, body = await change(client, "PUT", headers, {"entries": [C, A]})
    assert status == 400 and "O16N_SSH_KNOWN_HOSTS" in body["message"]
    assert await nodes_of(client, headers) == []
    status, body = await change(client, "PUT", headers, {"entries": [C]})
    assert (status, body) == (200, {"computeNodes": [C]})
