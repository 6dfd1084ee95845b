"""Migrations build exactly the models' schema on both databases, and run down and up again."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from api.auth.models import ApiKey
from api.migrate import alembic_config, upgrade_head
from api.models import Base
from api.tenant.models import Tenant
from api.usage.models import UsageEvent, UsageKeyRollup, UsageRollup, UsageTenantRollup
from tests.e2e.processes import TOLLGATE, tollgate_env

BEFORE_UNITS = "d58b3f1e7a92"  # the revision before usage's per-unit quantities
UNITS = ("audio_seconds", "characters", "images")
USAGE_TABLES = (UsageEvent, UsageRollup, UsageKeyRollup, UsageTenantRollup)


def _fresh_postgres(admin_url: str, name: str) -> str:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def _schema_drift(url: str) -> list[object]:
    engine = sa.create_engine(url.replace("sqlite+aiosqlite", "sqlite"))
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    return list(diff)


@pytest.fixture(params=["postgres", "sqlite"])
def empty_database(request: pytest.FixtureRequest, tmp_path, service_urls) -> str:
    if request.param == "postgres":
        return _fresh_postgres(service_urls["TOLLGATE_TEST_POSTGRES_URL"], "migration_check")
    return f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"


class TestMigrations:
    def test_upgrade_matches_models(self, empty_database: str):
        upgrade_head(empty_database)
        assert _schema_drift(empty_database) == []

    def test_downgrade_to_base_and_back(self, empty_database: str):
        upgrade_head(empty_database)
        command.downgrade(alembic_config(empty_database), "base")
        engine = sa.create_engine(empty_database.replace("sqlite+aiosqlite", "sqlite"))
        with engine.connect() as connection:
            tables = set(sa.inspect(connection).get_table_names()) - {"alembic_version"}
        engine.dispose()
        assert tables == set()
        upgrade_head(empty_database)
        assert _schema_drift(empty_database) == []

    def test_processes_starting_together_migrate_one_at_a_time(self, service_urls, tmp_path):
        # What `docker compose up --scale api=3` does: three processes migrate a new database.
        url = _fresh_postgres(service_urls["TOLLGATE_TEST_POSTGRES_URL"], "migration_race")
        env = tollgate_env(tmp_path / "data", TOLLGATE_DATABASE_URL=url)
        runs = [
            subprocess.Popen([*TOLLGATE, "migrate"], env=env, stderr=subprocess.PIPE)
            for _ in range(3)
        ]
        for run in runs:
            _, err = run.communicate(timeout=120)
            assert run.returncode == 0, err.decode()
        assert _schema_drift(url) == []

    def test_usage_unit_quantities_down_and_up_keep_the_usage(self, empty_database: str):
        """The per-unit columns go and come back on every usage table; the rows stay, and a
        row recorded before the columns existed reads 0 of each."""
        upgrade_head(empty_database)
        engine = sa.create_engine(empty_database.replace("sqlite+aiosqlite", "sqlite"))
        tenant_id, key_id, event_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        hour = datetime(2026, 12, 7, 10, tzinfo=UTC)
        sums = {"requests": 1, "failed": 0, "reached": 1, "input_tokens": 0,
                "cached_input_tokens": 0, "output_tokens": 0, "cost_micros": 900}  # fmt: skip
        try:
            with engine.begin() as connection:
                connection.execute(sa.insert(Tenant.__table__), {"id": tenant_id, "name": "A"})
                connection.execute(
                    sa.insert(ApiKey.__table__),
                    {"id": key_id, "tenant_id": tenant_id, "name": "k", "scope": "standard",
                     "prefix": "tg_test", "last_four": "abcd"},
                )  # fmt: skip
                connection.execute(
                    sa.insert(UsageEvent.__table__),
                    {"id": event_id, "request_id": "req_1", "tenant_id": tenant_id,
                     "key_id": key_id, "endpoint": "/v1/audio/speech", "model": "tts-1",
                     "provider": "openai", "status": 200, "characters": 600,
                     "cost_micros": 900, "created_at": hour},
                )  # fmt: skip
                head = {"span": "h", "bucket": hour, "tenant_id": tenant_id}
                connection.execute(
                    sa.insert(UsageRollup.__table__),
                    {**head, "key_id": key_id, "model": "tts-1", **sums, "characters": 600},
                )
                connection.execute(
                    sa.insert(UsageKeyRollup.__table__),
                    {**head, "key_id": key_id, **sums, "characters": 600},
                )
                connection.execute(
                    sa.insert(UsageTenantRollup.__table__),
                    {**head, "model": "tts-1", **sums, "characters": 600},
                )

            command.downgrade(alembic_config(empty_database), BEFORE_UNITS)
            with engine.connect() as connection:
                inspector = sa.inspect(connection)
                for model in USAGE_TABLES:
                    table = model.__tablename__
                    names = {column["name"] for column in inspector.get_columns(table)}
                    assert names.isdisjoint(UNITS), table
                    assert names >= {"cost_micros", "input_tokens"}, table
                    count = sa.text(f"SELECT count(*), sum(cost_micros) FROM {table}")
                    assert tuple(connection.execute(count).one()) == (1, 900), table
                # The application of that revision records an event without them.
                connection.execute(
                    sa.text(
                        "INSERT INTO usage_events (id, request_id, tenant_id, key_id, endpoint,"
                        " model, provider, status, input_tokens, cached_input_tokens,"
                        " output_tokens, reasoning_tokens, cost_micros, latency_ms, tool_calls,"
                        " estimated, created_at) VALUES (:id, 'req_2', :tenant, :key,"
                        " '/v1/chat/completions', 'gpt-4o', 'openai', 200, 10, 0, 5, 0, 75, 1,"
                        " 0, false, :at)"
                    ).bindparams(
                        sa.bindparam("id", type_=sa.Uuid()),
                        sa.bindparam("tenant", type_=sa.Uuid()),
                        sa.bindparam("key", type_=sa.Uuid()),
                    ),
                    {"id": uuid.uuid4(), "tenant": tenant_id, "key": key_id, "at": hour},
                )
                connection.commit()

            upgrade_head(empty_database)
            assert _schema_drift(empty_database) == []
            with engine.connect() as connection:
                for model in USAGE_TABLES:
                    table = model.__tablename__
                    values = connection.execute(
                        sa.text(f"SELECT {', '.join(UNITS)} FROM {table}")
                    ).all()
                    assert sorted(tuple(row) for row in values) == (
                        [(0, 0, 0), (0, 0, 0)] if model is UsageEvent else [(0, 0, 0)]
                    ), table
        finally:
            engine.dispose()
