"""Shared fixtures: real PostgreSQL and Redis servers, a migrated database per backend, the app.

`make test` starts the servers (tools/testenv.py) and passes their URLs in
TOLLGATE_TEST_POSTGRES_URL / TOLLGATE_TEST_REDIS_URL; a bare `pytest` starts them itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from redis import Redis as SyncRedis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from api.db import create_engine
from api.migrate import upgrade_head
from api.models import Base
from api.settings import Settings
from tests.factories.tenants import ADMIN_TOKEN
from tests.fakes import anthropic_upstream, gemini_upstream
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.server import serve_in_thread
from tests.fakes.upstream import FakeUpstream
from tools import testenv

SECRET_KEY = "s" * 48
# Every log line and stored row the suite produces is searched for secrets (tests/hygiene.py).
pytest_plugins = ["tests.hygiene"]
BACKENDS = ["postgres", "sqlite"]

# The fakes listen on loopback: a proxy set for this machine must not stand in between (the
# proxy tests name their own).
for _name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
    os.environ.pop(_name, None)
    os.environ.pop(_name.upper(), None)


@pytest.fixture(scope="session")
def service_urls() -> Iterator[dict[str, str]]:
    names = ("TOLLGATE_TEST_POSTGRES_URL", "TOLLGATE_TEST_REDIS_URL")
    if all(os.environ.get(name) for name in names):
        yield {name: os.environ[name] for name in names}
        return
    with testenv.services() as urls:
        yield urls


@pytest.fixture(scope="session")
def redis_url(service_urls: dict[str, str]) -> str:
    return service_urls["TOLLGATE_TEST_REDIS_URL"]


def _sync_url(url: str) -> str:
    """Fixtures set up outside the event loop, so they talk to the database synchronously."""
    return url.replace("sqlite+aiosqlite", "sqlite")


@pytest.fixture(scope="session")
def postgres_url(service_urls: dict[str, str]) -> str:
    admin_url = service_urls["TOLLGATE_TEST_POSTGRES_URL"]
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text('DROP DATABASE IF EXISTS "tollgate" WITH (FORCE)'))
        connection.execute(text('CREATE DATABASE "tollgate"'))
    engine.dispose()
    url = admin_url.rsplit("/", 1)[0] + "/tollgate"
    upgrade_head(url)
    return url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "tollgate.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade_head(url)
    return url


# Sessions a test left open in a transaction: an app whose thread the test stopped waiting
# for, or a task of the shared event loop that this (blocking) cleanup keeps from finishing.
_IDLE_IN_TRANSACTION = text(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
)


def truncate_all(url: str) -> None:
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    engine = sa.create_engine(_sync_url(url))
    from tests import hygiene  # a plugin (`pytest_plugins`): imported by pytest first

    try:
        with engine.connect() as connection:  # what the test left, searched for secrets first
            for table in tables:
                hygiene.scan_rows(table, connection.execute(text(f"SELECT * FROM {table}")))
        if engine.dialect.name != "postgresql":
            with engine.begin() as connection:
                for table in tables:
                    connection.execute(text(f"DELETE FROM {table}"))
            return
        for attempt in (1, 2):
            try:
                with engine.begin() as connection:
                    connection.execute(text("SET LOCAL lock_timeout = '10s'"))
                    connection.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
                return
            except sa.exc.OperationalError:  # a lock a leftover session holds
                if attempt == 2:
                    raise
                with engine.begin() as connection:
                    connection.execute(_IDLE_IN_TRANSACTION)
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test that uses it runs once on PostgreSQL and once on the embedded SQLite default."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    yield url
    truncate_all(url)


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Settings]:
    """PostgreSQL + Redis (production), or SQLite with in-process counters (embedded default)."""
    yield Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        redis_url=redis_url if database_url.startswith("postgresql") else None,
        secret_key=SECRET_KEY,
        admin_token=ADMIN_TOKEN,
        # Search loads a 7-20 s model on the first turn; its own tests turn it on.
        search_enabled=False,
    )
    # As the tables are emptied: state under fixed names (an account's cooldown, a session's
    # account) would otherwise reach the next test.
    with SyncRedis.from_url(redis_url) as redis:
        redis.flushdb()


@contextlib.asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    # Shutdown may wait on writes (alerts: up to 5 s): the harness must not cancel it first.
    async with LifespanManager(app, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://tollgate.test"
        ) as client:
            yield client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings) as http:
        yield http


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A direct connection for tests that look at rows behind the API's back."""
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def fake_upstream_server() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture
def upstream(fake_upstream_server: FakeUpstream) -> Iterator[FakeUpstream]:
    fake_upstream_server.reset()
    yield fake_upstream_server
    fake_upstream_server.reset()


@pytest.fixture
def gateway_settings(settings: Settings, upstream: FakeUpstream) -> Settings:
    return settings.model_copy(
        update={
            "openai_api_key": SecretStr("sk-operator-openai"),
            "openai_base_url": upstream.openai_base_url,
            "deepseek_api_key": SecretStr("sk-operator-deepseek"),
            "deepseek_base_url": upstream.deepseek_base_url,
            "upstream_read_timeout_seconds": 2.0,
            # Retries stay fast: millisecond backoff, at most a second spent retrying.
            "retry_base_delay_seconds": 0.01,
            "retry_max_delay_seconds": 0.05,
            "retry_max_total_seconds": 1.0,
            "capacity_wait_seconds": 0.5,
            "allow_private_webhooks": True,  # the test webhook receiver listens on loopback
        }
    )


@pytest.fixture
def gateway_url(gateway_settings: Settings) -> Iterator[str]:
    """Tollgate as users run it: uvicorn on a loopback port, pointed at the fake upstreams."""
    with serve_in_thread(create_app(gateway_settings)) as url:
        yield url


@pytest.fixture
async def http(gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def fake_anthropic_server() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_gemini_server() -> Iterator[FakeGemini]:
    server = FakeGemini()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def claude(fake_anthropic_server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    fake_anthropic_server.reset()
    yield fake_anthropic_server
    fake_anthropic_server.reset()


@pytest.fixture
def gemini(fake_gemini_server: FakeGemini) -> Iterator[FakeGemini]:
    fake_gemini_server.reset()
    yield fake_gemini_server
    fake_gemini_server.reset()


@pytest.fixture
def every_provider_url(
    gateway_settings: Settings, claude: FakeAnthropic, gemini: FakeGemini
) -> Iterator[str]:
    """Tollgate with all four providers configured, each pointed at its fake."""
    settings = gateway_settings.model_copy(
        update={
            "anthropic_api_key": SecretStr(anthropic_upstream.API_KEY),
            "anthropic_base_url": claude.base_url,
            "gemini_api_key": SecretStr(gemini_upstream.API_KEY),
            "gemini_base_url": gemini.base_url,
        }
    )
    with serve_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture
async def every_http(every_provider_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=every_provider_url, timeout=30) as client:
        yield client
