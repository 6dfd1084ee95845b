"""The `tollgate` command (SPEC §3): serve, worker, migrate, tenant create, version."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from api import __version__
from api.settings import ConfigurationError, Settings, get_settings, resolve_secret_key

F = TypeVar("F", bound=Callable[..., Any])


def _one_line_errors(func: F) -> F:
    """Expected failures print one line on stderr and exit 1, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigurationError, OSError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except Exception as exc:
            module = type(exc).__module__
            if module.startswith(("sqlalchemy", "psycopg", "alembic", "redis")):
                where = "redis" if module.startswith("redis") else "database"
                click.echo(f"error: {where}: {str(exc).splitlines()[0]}", err=True)
                sys.exit(1)
            raise

    return wrapper  # type: ignore[return-value]  # wraps keeps the signature


def _settings() -> Settings:
    settings = get_settings()
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


def _migrate(settings: Settings) -> None:
    from api.migrate import upgrade_head

    click.echo("Applying database migrations…", err=True)
    upgrade_head(settings.resolved_database_url)


def _migrate_in_child() -> None:
    """`serve` migrates in a child process: Alembic would stay in the server's memory."""
    import subprocess

    result = subprocess.run([sys.executable, "-m", "api", "migrate"], check=False)
    if result.returncode != 0:
        sys.exit(result.returncode)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tollgate")
def main() -> None:
    """Tollgate: per-user keys, metering, spend caps and billing for AI products."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(__version__)


@main.command()
@_one_line_errors
def migrate() -> None:
    """Apply pending database migrations."""
    _migrate(_settings())
    click.echo("Database is up to date.", err=True)


@main.command()
@click.option("--host", default=None, help="Listen address (default: TOLLGATE_HOST).")
@click.option("--port", default=None, type=int, help="Listen port (default: TOLLGATE_PORT).")
@click.option("--no-migrate", is_flag=True, help="Do not apply pending migrations first.")
@_one_line_errors
def serve(host: str | None, port: int | None, no_migrate: bool) -> None:
    """Run the API server (migrates the database first)."""
    import uvicorn

    from api.app import create_app

    settings = _settings()
    resolve_secret_key(settings)
    if not no_migrate:
        _migrate_in_child()
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host or settings.host,
        port=port or settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        proxy_headers=False,
    )


@main.command()
@_one_line_errors
def worker() -> None:
    """Run the background worker (arq): usage-ledger drain, alert resends. Needs Redis."""
    from arq.connections import RedisSettings
    from arq.worker import run_worker

    from workers.settings import WorkerSettings

    settings = _settings()
    if not settings.redis_url:
        raise ConfigurationError(
            "TOLLGATE_REDIS_URL is required: without Redis, `tollgate serve` runs the "
            "background work in-process"
        )
    resolve_secret_key(settings)  # fail here, in one line, not inside the worker's start-up
    click.echo("Worker started; stop it with Ctrl+C.", err=True)
    worker_settings: Any = WorkerSettings  # arq's protocol type is stricter than its checks
    run_worker(worker_settings, redis_settings=RedisSettings.from_dsn(settings.redis_url))


@main.group()
def tenant() -> None:
    """Manage tenants."""


@tenant.command("create")
@click.option("--name", required=True, help="The tenant's display name.")
@_one_line_errors
def tenant_create(name: str) -> None:
    """Create a tenant and print its id and master key as JSON (the key is shown once)."""
    from api.auth.secrets import derive_pepper
    from api.db import create_engine, create_sessionmaker
    from api.tenant import service as tenant_service

    if not name.strip():
        raise click.BadParameter("must not be empty", param_hint="--name")
    settings = _settings()
    pepper = derive_pepper(resolve_secret_key(settings))
    if not settings.database_url:
        _migrate(settings)  # the embedded default works before `serve` ever ran

    async def run() -> dict[str, str]:
        engine = create_engine(settings.resolved_database_url)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                created, secret = await tenant_service.create_tenant(session, pepper, name.strip())
            return {"tenant_id": str(created.id), "master_key": secret}
        finally:
            await engine.dispose()

    click.echo(json.dumps(asyncio.run(run())))


@main.group()
def usage() -> None:
    """Usage ledger and counters."""


@usage.command("rebuild-counters")
@_one_line_errors
def usage_rebuild_counters() -> None:
    """Recount every cap and rate-limit counter from the ledger.

    The counters are dropped; each is seeded again from the usage ledger by the next request
    that needs it. Reservations in flight are kept.
    """
    from redis.asyncio import Redis

    from api.gateway.budget import COUNTER_PATTERNS
    from api.kit.counters import RedisCounterStore

    settings = _settings()
    if not settings.redis_url:
        click.echo(
            "The embedded default keeps its counters in the server process, seeded from the "
            "ledger at start: restart `tollgate serve` to rebuild them.",
            err=True,
        )
        return

    async def run() -> int:
        redis = Redis.from_url(settings.redis_url or "")
        try:
            return await RedisCounterStore(redis).forget_all(COUNTER_PATTERNS)
        finally:
            await redis.aclose()

    click.echo(f"Dropped {asyncio.run(run())} counters; they are recounted from the ledger.")
