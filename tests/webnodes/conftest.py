"""A group of controllers needs PostgreSQL: a cluster for these tests in any run."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests import conftest
from tests.postgres_cluster import PostgresCluster


@pytest.fixture(scope="session")
def group_cluster() -> Iterator[PostgresCluster]:
    """The run's cluster in a run on PostgreSQL; else one of these tests' own, started at
    their first use and stopped at the end of the run."""
    if conftest._CLUSTER is not None:
        yield conftest._CLUSTER
        return
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def group_database(group_cluster: PostgresCluster) -> Iterator[str]:
    """The URL of a database of the test's own, dropped at its end."""
    name = "g_" + secrets.token_hex(8)
    group_cluster.create_database(name)
    try:
        yield group_cluster.url(name)
    finally:
        group_cluster.drop_database(name)
