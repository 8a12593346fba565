"""A property-based run of schemathesis against a live server, driven by o16n's own core
document: no 5xx, and no response that contradicts the document (status, content type,
body schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.live_server import LiveServer, run_server

pytestmark = pytest.mark.docker

CORE = Path(__file__).resolve().parents[2] / "swagger" / "o16n-swagger.json"
# The realtime endpoints are left out: each fuzzed publish would start a container to
# check a random model (tests/realtime checks them). The /admin endpoints too: fuzzed with
# the Owner's token they would end that token's own logins (a random new password) or
# drain the node under the other cases; tests/admin checks them. /computenodes too: a
# fuzzed list would have the engine connect to made-up nodes (a 503 when it cannot) under
# the other cases; tests/computenodes checks it.
schema = schemathesis.openapi.from_path(str(CORE)).exclude(
    path_regex="^/(realtime-services|admin|computenodes)"
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    # No warm containers: fuzzed sessions and services start theirs on demand.
    yield from run_server(
        warm_pool_size="0", service_pool_initial="0", sessions_per_user="4", execute_timeout="20"
    )


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_the_live_server_keeps_to_its_document(case: schemathesis.Case, live: LiveServer) -> None:
    response = case.call(base_url=live.url, headers=live.headers, timeout=60)
    case.validate_response(response, checks=CHECKS)
