"""HAProxy (docs/haproxy.cfg, Debian's package) in front of two ``o16n serve`` processes
sharing one PostgreSQL database: requests alternate between them with no stickiness, a
dead one is taken out of rotation, and the seed workflow passes through it."""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import pytest
import requests
from aiohttp import ClientSession

from tests import conftest
from tests.clients.seed import seed_workflow
from tests.postgres_cluster import PostgresCluster
from tests.webnodes.group import HAProxy, haproxy_binary, kill, render_config, running_group


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
    pg_cluster: PostgresCluster, data_dir: Path
) -> None:
    with running_group(pg_cluster, data_dir, engine=conftest.ENGINE) as group:
        proxy: HAProxy = group.haproxy
        with requests.Session() as http:  # one keep-alive connection to the proxy
            for _ in range(6):
                resp = http.get(f"{group.url}/status", headers=group.headers, timeout=10)
                assert resp.status_code == 200, resp.text
                # the proxy names the request, in its log and the controller's
                assert re.fullmatch(r"[0-9A-F]+", resp.headers["X-Request-Id"])
            assert proxy.served() == ["web1", "web2"] * 3  # per request, not per connection
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
            assert proxy.served()[-6:] == ["web2"] * 6


@pytest.mark.docker
@pytest.mark.timeout(600)
async def test_the_seed_workflow_through_haproxy_alternates_between_controllers(
    pg_cluster: PostgresCluster, data_dir: Path
) -> None:
    with running_group(pg_cluster, data_dir, lease_seconds="3") as group:
        async with ClientSession(base_url=group.url) as client:
            await seed_workflow(client)
        served = group.haproxy.served()
        assert len(served) > 20
        assert all(a != b for a, b in itertools.pairwise(served)), served
        stats = group.haproxy.servers()
        assert {name: stats[name]["hrsp_5xx"] for name in stats} == {"web1": "0", "web2": "0"}
