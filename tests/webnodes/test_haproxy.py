"""HAProxy (docs/haproxy.cfg, Debian's package) in front of two ``o16n serve`` processes
sharing one PostgreSQL database: requests alternate between them with no stickiness, a
dead one is taken out of rotation, and the seed workflow passes through it."""

from __future__ import annotations

import http.client
import itertools
import json
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from aiohttp import ClientSession

from tests import conftest
from tests.clients.seed import seed_workflow
from tests.haproxy import HAProxy, haproxy_binary, render_config
from tests.postgres_cluster import PostgresCluster
from tests.webnodes.group import kill, running_group


def test_the_docs_configuration_is_valid_as_given_and_as_the_tests_run_it(tmp_path: Path) -> None:
    docs = subprocess.run(
        [haproxy_binary(), "-c", "-f", "docs/haproxy.cfg"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=False,
    )
    assert docs.returncode == 0, docs.stdout + docs.stderr
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        render_config(
            {"web1": "127.0.0.1:1", "web2": "127.0.0.1:2"},
            port=3,
            stats_socket=tmp_path / "sock",
        )
    )
    text = config.read_text()
    assert "server web1 127.0.0.1:1\n" in text and "server web2 127.0.0.1:2\n" in text
    assert "10.0.0.11" not in text and "chroot" not in text and "bind 127.0.0.1:3\n" in text
    rendered = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(config)], capture_output=True, text=True, check=False
    )
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr


@pytest.mark.timeout(180)
def test_requests_alternate_and_a_killed_controller_leaves_the_rotation(
    group_cluster: PostgresCluster, data_dir: Path
) -> None:
    with running_group(group_cluster, data_dir, engine=conftest.ENGINE) as group:
        proxy: HAProxy = group.haproxy
        with requests.Session() as http:
            for _ in range(6):
                resp = http.get(f"{group.url}/status", headers=group.headers, timeout=10)
                assert resp.status_code == 200, resp.text
                # the proxy names the request, in its log and the controller's
                assert re.fullmatch(r"[0-9A-F]+", resp.headers["X-Request-Id"])
                # one request per client connection: a 502, never a silent close, when
                # the controller dies under it (docs/haproxy.md)
                assert resp.headers["Connection"] == "close"
            assert proxy.served(6) == ["web1", "web2"] * 3
            own = http.get(
                f"{group.url}/status", headers={**group.headers, "X-Request-Id": "mine-1"}
            )
            assert own.headers["X-Request-Id"] == "mine-1"

            kill(group.controllers["web1"])
            # a refused connection is sent to the other controller, and marks it down
            for _ in range(6):
                resp = http.get(f"{group.url}/status", headers=group.headers, timeout=10)
                assert resp.status_code == 200, resp.text
            assert proxy.wait_status("web1", "DOWN", within=5) < 5
            assert proxy.servers()["web2"]["status"] == "UP"
            assert proxy.served(13)[-6:] == ["web2"] * 6


@pytest.mark.docker
@pytest.mark.timeout(600)
async def test_the_seed_workflow_through_haproxy_alternates_between_controllers(
    group_cluster: PostgresCluster, data_dir: Path
) -> None:
    with running_group(group_cluster, data_dir, lease_seconds="3") as group:
        async with ClientSession(base_url=group.url) as client:
            await seed_workflow(client)
        served = group.haproxy.served()
        assert len(served) > 20
        assert all(a != b for a, b in itertools.pairwise(served)), served
        stats = group.haproxy.servers()
        assert {name: stats[name]["hrsp_5xx"] for name in stats} == {"web1": "0", "web2": "0"}


@pytest.mark.timeout(180)
def test_a_request_in_flight_on_a_killed_controller_is_a_502_not_a_silent_close(
    group_cluster: PostgresCluster, data_dir: Path
) -> None:
    """HAProxy closes a client connection that served a request before without a word
    when the controller drops the next one (the client may retry it, which a POST must
    not): docs/haproxy.cfg gives every request a connection of its own, so it is a 502."""
    with running_group(group_cluster, data_dir, engine=conftest.ENGINE) as group:
        proxy, headers, web1 = group.haproxy, group.headers, group.controllers["web1"]
        resp = requests.post(f"{web1.url}/sessions", json={}, headers=headers, timeout=30)
        assert resp.status_code == 201, resp.text
        execute = f"/sessions/{resp.json()['sessionId']}/execute"

        proxy.command("set server o16n_controllers/web2 state maint")  # web1 takes all
        connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        try:
            # a request on this connection first: the next one is not its first
            connection.request("GET", "/status", headers=headers)
            connection.getresponse().read()
            body = json.dumps({"code": "import time\ntime.sleep(10)"})
            with ThreadPoolExecutor(1) as pool:
                answer = pool.submit(post, connection, execute, body, headers)
                time.sleep(1.5)  # in the session's code on web1
                kill(web1)
                try:
                    status: int | str = answer.result(timeout=30)
                except (OSError, http.client.HTTPException) as exc:
                    status = repr(exc)
        finally:
            connection.close()
        assert status == 502, (status, proxy.log_text()[-2000:])
        assert proxy.served(2) == ["web1", "web1"]


def post(
    connection: http.client.HTTPConnection, path: str, body: str, headers: dict[str, str]
) -> int:
    connection.request(
        "POST", path, body=body, headers={**headers, "Content-Type": "application/json"}
    )
    response = connection.getresponse()
    response.read()
    return response.status
