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
    from api.kit.connections import GuardedProtocol

    settings = _settings()
    resolve_secret_key(settings)
    if not no_migrate:
        _migrate_in_child()
    from api.kit.heap import frozen_after

    app = create_app(settings)
    # What the app builds at start-up lives as long as the process: out of the collector's way.
    app.router.lifespan_context = frozen_after(app.router.lifespan_context)
    uvicorn.run(
        app,
        host=host or settings.host,
        port=port or settings.port,
        loop="uvloop",
        http=GuardedProtocol.with_limits(
            settings.header_timeout_seconds,
            settings.body_timeout_seconds,
            settings.client_write_timeout_seconds,
        ),
        log_level=settings.log_level,
        # uvicorn formats each access line's arguments even when the level drops the line.
        access_log=settings.log_level in ("debug", "trace", "info"),
        proxy_headers=False,
    )


@main.command()
@_one_line_errors
def worker() -> None:
    """Run the background worker (arq): tool calls, ledger drain, alert resends. Needs Redis."""
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


async def _drain_ledger(settings: Settings, sessionmaker: Any) -> None:
    """With Redis, move usage events still in the ledger stream into the database."""
    if not settings.redis_url:
        return
    import socket

    from redis.asyncio import Redis

    from api.usage.ledger import LedgerDrain

    redis = Redis.from_url(settings.redis_url)
    try:
        await LedgerDrain(redis, sessionmaker, f"cli-{socket.gethostname()}").until_empty(60)
    finally:
        await redis.aclose()


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


@main.group()
def billing() -> None:
    """Stripe billing."""


@billing.command("sync")
@click.option("--period", required=True, help="The month to bill, YYYY-MM (one that has ended).")
@click.option(
    "--tenant",
    "tenant_id",
    default=None,
    help="Only this tenant (default: every tenant with Stripe configured).",
)
@click.option("--dry-run", is_flag=True, help="Print what would be billed; send and write nothing.")
@_one_line_errors
def billing_sync(period: str, tenant_id: str | None, dry_run: bool) -> None:
    """Invoice each Stripe customer's metered spend for PERIOD, once (re-runs resume).

    Prints one JSON line per tenant; exits 1 if any customer or tenant could not be billed.
    """
    import uuid

    from api.billing.stripe_gateway import gateway_factory
    from api.billing.sync import TenantResult, sync_tenants
    from api.db import create_engine, create_sessionmaker
    from api.errors import AppError
    from api.kit.crypto import SecretBox

    tenant_ids = None
    if tenant_id is not None:
        try:
            tenant_ids = [uuid.UUID(tenant_id)]
        except ValueError:
            raise click.BadParameter("not a tenant id", param_hint="--tenant") from None
    settings = _settings()
    box = SecretBox(resolve_secret_key(settings))

    def progress(tenant: uuid.UUID) -> Callable[[int, int], None]:
        bar: Any = None

        def step(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = click.progressbar(length=total, label=f"tenant {tenant}", file=sys.stderr)
                bar.__enter__()
            bar.update(1)
            if done == total:
                bar.__exit__(None, None, None)

        return step

    async def run() -> list[TenantResult]:
        engine = create_engine(settings.resolved_database_url)
        try:
            await _drain_ledger(settings, create_sessionmaker(engine))
            return await sync_tenants(
                create_sessionmaker(engine), box, gateway_factory(settings), period,
                tenant_ids=tenant_ids, dry_run=dry_run, progress=progress,
            )  # fmt: skip
        finally:
            await engine.dispose()

    try:
        results = asyncio.run(run())
    except AppError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    problems = 0
    for result in results:
        line, failed = _sync_report(result, period, dry_run)
        problems += failed
        click.echo(json.dumps(line))
    if problems:
        click.echo(f"error: {problems} could not be billed; run the sync again to resume", err=True)
        sys.exit(1)


def _sync_report(result: Any, period: str, dry_run: bool) -> tuple[dict[str, Any], int]:
    """One tenant's JSON line, and how many of its customers (or itself) failed."""
    from api.billing.service import render_plan

    line: dict[str, Any] = {"tenant_id": str(result.tenant_id), "period": period}
    if result.outcome is None:
        line["error"] = result.error
        return line, 1
    plan = result.outcome.plan
    line.update(
        run_id=str(result.outcome.run_id) if result.outcome.run_id else None,
        dry_run=dry_run,
        customers=len(plan.records),
        carried_forward=sum(1 for r in plan.records if r.carried_forward),
        amount_cents=sum(r.amount_cents for r in plan.records if not r.carried_forward),
        already_billed=len(plan.already_billed),
        failed=result.outcome.failed,
    )
    if dry_run:
        line["records"] = render_plan(plan)["records"]
    return line, len(result.outcome.failed)


@main.group()
def search() -> None:
    """Semantic search over thread messages."""


@search.command("reindex")
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant (default: all).")
@_one_line_errors
def search_reindex(tenant_id: str | None) -> None:
    """Rebuild the search index from the database, e.g. after the embedding model changed.

    Every message (of the tenant) is embedded again and its vector replaced; without --tenant
    the collection is dropped and created anew first, for a model with other dimensions. With
    the embedded default, stop `tollgate serve` first: its vector store is the server's.
    """
    import uuid

    from api.search.store import StoreUnavailable

    tenant = None
    if tenant_id is not None:
        try:
            tenant = uuid.UUID(tenant_id)
        except ValueError:
            raise click.BadParameter("not a tenant id", param_hint="--tenant") from None
    settings = _settings()
    if not settings.search_enabled:
        raise ConfigurationError("search is turned off (TOLLGATE_SEARCH_ENABLED=false)")
    try:
        indexed, points = asyncio.run(_reindex(settings, tenant))
    except StoreUnavailable as exc:
        click.echo(f"error: vector store: {exc}", err=True)
        sys.exit(1)
    click.echo(json.dumps({"tenant_id": tenant_id, "messages": indexed, "vectors": points}))


async def _reindex(settings: Settings, tenant: Any) -> tuple[int, int]:
    import api.models  # noqa: F401  # the whole schema: foreign keys (and their types) resolve
    from api.db import create_engine, create_sessionmaker, session_scope
    from api.search import repository
    from api.search.runtime import Search

    engine = create_engine(settings.resolved_database_url)
    search = Search.build(settings, create_sessionmaker(engine))
    store, indexer = search.store, search.indexer
    assert store is not None  # search is on
    assert indexer is not None
    try:
        await store.ping()  # the embedded store in use by a server fails here, in one line
        click.echo("Loading the embedding model…", err=True)
        dimensions = await indexer.embedder.dimensions()
        if tenant is None:
            await store.drop()
        else:
            await store.delete_where(tenant)
        await store.ensure(dimensions)
        async with session_scope(indexer.sessionmaker) as session:
            await repository.reset_unscoped(session, tenant)
            total = await repository.count_unscoped(session, tenant)
        with click.progressbar(length=total, label="Indexing", file=sys.stderr) as bar:
            await indexer.index_pending(tenant, progress=bar.update)
            async with session_scope(indexer.sessionmaker) as session:
                left = await repository.count_unscoped(session, tenant, pending=True)
            bar.update(total - left - bar.pos)  # what workers indexed meanwhile counts too
        return total, await store.count(tenant)
    finally:
        await search.close()
        await engine.dispose()
