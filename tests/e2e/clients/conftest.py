"""The compatibility suite's gateway: one Tollgate (PostgreSQL + Redis) in front of the scripted
fakes of all three families, shared by the package; each cell has a key of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import truncate_all
from tests.e2e.clients.harness import (
    Fakes,
    Gateway,
    gateway_settings,
    running_gateway,
    scripted_fakes,
)


@pytest.fixture(scope="package")
def fakes() -> Iterator[Fakes]:
    with scripted_fakes() as started:
        yield started


@pytest.fixture(scope="package")
def gateway(
    fakes: Fakes, postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("clients") / "data"
    with running_gateway(gateway_settings(fakes, postgres_url, redis_url, data)) as started:
        yield started
    truncate_all(postgres_url)


@pytest.fixture
def key(gateway: Gateway, fakes: Fakes, request: pytest.FixtureRequest) -> str:
    """A fresh key for the cell, and fakes that have seen nothing yet."""
    fakes.reset()
    return gateway.key(request.node.name)
