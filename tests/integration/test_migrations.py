"""Migrations build exactly the models' schema on both databases, and run down and up again."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from api.migrate import alembic_config, upgrade_head
from api.models import Base


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
