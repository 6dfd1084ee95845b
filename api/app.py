"""`create_app(settings)`: the FastAPI application and the lifespan that owns its resources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import Redis
from starlette.types import Receive, Scope, Send

from api import __version__, error_handlers, openapi
from api.alert.email import mailer_from_settings
from api.alert.routes import router as alerts_router
from api.alert.service import AlertNotifier
from api.auth.cache import KeyCache
from api.auth.routes import router as keys_router
from api.auth.secrets import derive_pepper
from api.background import Background
from api.billing.routes import router as billing_router
from api.dashboard.routes import router as dashboard_router
from api.db import create_sessionmaker, engine_for
from api.deps import BoundedJSONBody
from api.gateway import tokens
from api.gateway.catalog import Catalog
from api.gateway.dialects.anthropic.routes import (
    COUNT_TOKENS_PATH,
    MESSAGES_PATH,
    count_tokens,
    create_message,
)
from api.gateway.dialects.anthropic.routes import router as anthropic_router
from api.gateway.dialects.gemini.routes import router as gemini_router
from api.gateway.dialects.openai import audio, embeddings, images
from api.gateway.dialects.openai import units as unit_routes
from api.gateway.dialects.openai.routes import CHAT_PATH, create_chat_completion
from api.gateway.dialects.openai.routes import router as openai_router
from api.gateway.dialects.responses.routes import RESPONSES_PATH, create_response
from api.gateway.dialects.responses.routes import router as responses_router
from api.gateway.providers.registry import upstream_proxies
from api.gateway.runtime import GatewayRuntime
from api.health.routes import router as health_router
from api.job.routes import router as jobs_router
from api.kit.crypto import SecretBox
from api.kit.webhook_client import create_webhook_client
from api.metrics import Metrics
from api.middleware import (
    BodySizeLimitMiddleware,
    ProxyLane,
    RequestIdMiddleware,
    google_query_key,
)
from api.provider.routes import router as providers_router
from api.response.conversation_routes import router as conversations_router
from api.response.routes import router as stored_responses_router
from api.search.routes import router as search_router
from api.search.runtime import Search
from api.settings import Settings, get_settings, resolve_secret_key
from api.shield.routes import router as shield_router
from api.state import AppState
from api.tenant.routes import router as admin_router
from api.tenant.routes import settings_router
from api.thread.context import turn_context
from api.thread.routes import router as threads_router
from api.tool.routes import router as tools_router
from api.tool.runner import ToolRunner
from api.trace.routes import router as traces_router
from api.usage.routes import router as usage_router

logger = logging.getLogger("tollgate")


class TollgateApp(FastAPI):
    """FastAPI, with the proxy's hottest routes taken by `lane` before its middleware stack."""

    lane: ProxyLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and b"key=" in scope["query_string"]:
            google_query_key(scope)  # before anything can log the URL with a key in it
        lane = self.lane
        handler = lane.handler(scope) if lane is not None else None
        if handler is None:
            await super().__call__(scope, receive, send)
        else:
            await lane.serve(handler, scope, receive, send)  # type: ignore[union-attr]


async def _nothing() -> None:
    return None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Resolved here, not in lifespan, so a missing secret fails at start-up with one clear line.
    secret_key = resolve_secret_key(settings)
    pepper = derive_pepper(secret_key)
    secret_box = SecretBox(secret_key)
    proxies = upstream_proxies()  # likewise for a proxy that cannot be used
    catalog = Catalog.build(settings.models)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[AppState]:
        engine = engine_for(settings)
        sessionmaker = create_sessionmaker(engine)
        redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        webhook_client = create_webhook_client(allow_private=settings.allow_private_webhooks)
        notifier = AlertNotifier(
            sessionmaker, webhook_client, secret_box, mailer=mailer_from_settings(settings)
        )
        if redis is None or settings.api_runs_background_jobs:
            notifier.start_sweep()
        runtime = GatewayRuntime.start(
            settings, sessionmaker, redis, secret_box, catalog=catalog, metrics=metrics,
            on_crossing=notifier.crossed, consumer=f"api-{socket.gethostname()}", proxies=proxies,
        )  # fmt: skip
        gateway = runtime.gateway
        drain = runtime.drain
        drain_task: asyncio.Task[None] | None = None
        if drain is not None and settings.api_runs_background_jobs:
            drain_task = asyncio.create_task(drain.run(), name="ledger-drain")
        key_cache = KeyCache(redis)
        key_cache.start()
        # The o200k vocabulary takes ~0.7 s to load: off the event loop, before a cut-off
        # stream or a test key first needs it.
        warm_tokenizer = asyncio.get_running_loop().run_in_executor(None, tokens.warm_up)
        search = Search.build(settings, sessionmaker)  # nothing is loaded until it is used
        # What background tasks read (`api.background`), the same keys as `tollgate worker`'s.
        ctx = {
            "settings": settings, "sessionmaker": sessionmaker, "gateway": gateway,
            "webhooks": webhook_client, "secret_box": secret_box,
            "tool_runner": ToolRunner(sessionmaker, webhook_client, secret_box),
            "search": search,
        }  # fmt: skip
        background = Background.start(settings, ctx)
        search.start(settings, background.queue)
        if search.enabled:  # the semantic cache asks search's model and a store of its own
            gateway.semantic = search
        turns = ctx["turns"] = turn_context(
            sessionmaker, redis, gateway, background.queue, on_persisted=search.turn_persisted
        )
        try:
            yield AppState(
                settings=settings,
                engine=engine,
                sessionmaker=sessionmaker,
                pepper=pepper,
                redis=redis,
                gateway=gateway,
                key_cache=key_cache,
                secret_box=secret_box,
                turns=turns,
                search=search,
            )
        finally:
            # In order, each step even if one before it failed: a step that raised used to
            # skip the rest, leaving the key cache, routing and ledger tasks running unowned.
            async def drain_ledger() -> None:
                if drain is not None and drain_task is not None:
                    drain_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await drain_task
                    # Leave the stream empty; what is left is drained by the next process.
                    await drain.until_empty()

            steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                ("tokenizer", lambda: warm_tokenizer),
                ("search", search.stop),
                ("background", background.close),  # before the gateway: its calls are metered
                ("search store", search.close),
                ("gateway", runtime.close),  # every accepted request's usage event is written
                ("usage ledger", drain_ledger),
                ("alerts", notifier.close),
                ("webhook client", webhook_client.aclose),
                ("key cache", key_cache.close),
                ("upstream clients", runtime.close_clients),
                ("redis", redis.aclose if redis is not None else _nothing),
                ("database", engine.dispose),
            ]
            # A cancelled lifespan (a forced exit, a host's shutdown timeout) also runs the rest:
            # cancellation interrupts one await only, and the tasks left would outlive the app.
            cancelled: asyncio.CancelledError | None = None
            for name, step in steps:
                try:
                    await step()
                except asyncio.CancelledError as exc:
                    cancelled = exc
                    logger.warning("shutting down: %s was cancelled", name)
                except Exception:
                    logger.exception("shutting down: %s failed", name)
            if cancelled is not None:
                raise cancelled

    app = TollgateApp(
        title="Tollgate",
        version=__version__,
        summary="Per-user API keys, metering, hard spend caps and billing for AI products.",
        lifespan=lifespan,
        dependencies=[BoundedJSONBody],
    )
    error_handlers.install(app)
    openapi.install(app)
    app.include_router(openai_router)  # first: the proxy's routes are matched most often
    app.include_router(anthropic_router)
    app.include_router(responses_router)
    app.include_router(gemini_router)
    app.include_router(health_router)
    app.include_router(keys_router)
    app.include_router(usage_router)
    app.include_router(traces_router)
    app.include_router(admin_router)
    app.include_router(settings_router)
    app.include_router(shield_router)
    app.include_router(alerts_router)
    app.include_router(billing_router)
    app.include_router(threads_router)
    app.include_router(search_router)
    app.include_router(jobs_router)
    app.include_router(stored_responses_router)
    app.include_router(conversations_router)
    app.include_router(tools_router)
    app.include_router(providers_router)
    app.include_router(unit_routes.router)
    app.include_router(dashboard_router)  # last: the pages are matched least often
    proxy_routes = {
        CHAT_PATH: create_chat_completion,
        MESSAGES_PATH: create_message,
        COUNT_TOKENS_PATH: count_tokens,
        RESPONSES_PATH: create_response,
        embeddings.EMBEDDINGS_PATH: embeddings.create_embedding,
        audio.TRANSCRIPTIONS_PATH: audio.create_transcription,
        audio.TRANSLATIONS_PATH: audio.create_translation,
        audio.SPEECH_PATH: audio.create_speech,
        images.GENERATIONS_PATH: images.create_image,
        images.EDITS_PATH: images.edit_image,
    }
    app.lane = ProxyLane(proxy_routes, settings.max_body_bytes)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app
