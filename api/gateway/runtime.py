"""The gateway and the long-lived parts it owns, built the same way wherever model calls run:
in the API's lifespan, and in `tollgate worker` for async jobs (`api.job`).

With Redis: counters and holds in Redis, usage events through the Redis ledger stream (whose
`drain` moves them to the database, run by the worker or the API's own background work).
Without: in-process counters, and usage events written to the database directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.alert.service import Crossing
from api.gateway import otel
from api.gateway.budget import Reservations
from api.gateway.cache import MemoryStore, RedisStore
from api.gateway.catalog import Catalog
from api.gateway.pipeline import Gateway
from api.gateway.providers.registry import ProviderRegistry, create_client
from api.gateway.resilience import RetryPolicy
from api.gateway.routing import Router, TenantRouting, pool_accounts
from api.gateway.semantic import MemoryEntries, RedisEntries
from api.kit.counters import CounterStore, MemoryCounterStore, RedisCounterStore
from api.kit.crypto import SecretBox
from api.kit.http1 import HTTPClient
from api.kit.proxies import Proxies
from api.kit.resp import PipelinedRedis
from api.metrics import Metrics
from api.provider import service as provider_service
from api.settings import Settings
from api.usage.ledger import DatabaseLedger, Ledger, LedgerDrain, RedisLedger

Crossed = Callable[[list[Crossing]], None]


@dataclass(slots=True)
class GatewayRuntime:
    gateway: Gateway
    budget: Reservations
    ledger: Ledger
    drain: LedgerDrain | None  # with Redis: moves the ledger stream into the database
    router: Router
    upstream: HTTPClient
    tenant_upstream: HTTPClient
    fast_redis: PipelinedRedis | None

    @classmethod
    def start(
        cls,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: Redis | None,
        secret_box: SecretBox,
        *,
        catalog: Catalog,
        metrics: Metrics,
        on_crossing: Crossed,
        consumer: str,
        proxies: Proxies | None = None,
    ) -> GatewayRuntime:
        upstream = create_client(settings, proxies)
        tenant_upstream = create_client(settings, proxies, tenant=True)
        ledger: Ledger
        drain = None
        fast_redis = None
        counters: CounterStore
        if redis is not None:
            url = settings.redis_url or ""
            fast_redis = PipelinedRedis(url) if PipelinedRedis.supports(url) else None
            redis_counters = RedisCounterStore(redis, fast=fast_redis)
            counters = redis_counters
            drain = LedgerDrain(redis, sessionmaker, consumer=consumer)
            ledger = RedisLedger(redis, redis_counters, sessionmaker, drain)
        else:
            counters = MemoryCounterStore()
            ledger = DatabaseLedger(sessionmaker, counters)
        ledger.start()
        budget = Reservations(
            sessionmaker, counters, flush_ledger=ledger.flush, on_crossing=on_crossing
        )
        registry = ProviderRegistry(settings, upstream, tenant_upstream)
        base_urls = {name: config.base_url for name, config in settings.providers.items()}

        async def load_tenant(tenant_id: uuid.UUID) -> TenantRouting:
            async with sessionmaker() as session:
                return await provider_service.tenant_routing(
                    session, secret_box, registry.build_for_tenant, base_urls, tenant_id
                )

        router = Router(
            pool_accounts(
                registry.pools, lambda a: registry.build(a.provider, a.base_url, a.api_key)
            ),
            loader=load_tenant,
            tenant_ttl=settings.byok_cache_seconds,
            capacity_wait=settings.capacity_wait_seconds,
            queue_size=settings.capacity_queue_size,
            sticky_seconds=settings.sticky_session_seconds,
            redis=redis,
        )
        router.start()
        gateway = Gateway(
            catalog=catalog,
            providers=registry,
            ledger=ledger,
            budget=budget,
            metrics=metrics,
            router=router,
            retry=RetryPolicy(
                max_attempts=settings.retry_max_attempts,
                base_delay=settings.retry_base_delay_seconds,
                max_delay=settings.retry_max_delay_seconds,
                max_total=settings.retry_max_total_seconds,
                cooldown=settings.cooldown_seconds,
                attempts_total=settings.upstream_total_timeout_seconds,
            ),
            unknown_fields=settings.unknown_fields,
            sessionmaker=sessionmaker,
            response_retention_days=settings.response_retention_days,
            audio_max_bytes=settings.audio_max_bytes,
            cache=RedisStore(redis) if redis is not None else MemoryStore(),
            semantic_entries=RedisEntries(redis) if redis is not None else MemoryEntries(),
        )
        gateway.spans = otel.start(settings)  # None unless an OTLP endpoint is configured
        return cls(gateway, budget, ledger, drain, router, upstream, tenant_upstream, fast_redis)

    async def close(self) -> None:
        """Every accepted request's usage event is written first; then the holds' spare room
        is other processes' again, and the clients close."""
        await self.gateway.close()
        await self.budget.close()
        await self.ledger.close()

    async def close_clients(self) -> None:
        await self.router.close()
        await self.upstream.close()
        await self.tenant_upstream.close()
        if self.fast_redis is not None:
            await self.fast_redis.close()
