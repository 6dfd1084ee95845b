"""Keys: mint, list, update, revoke, rotate, and resolve a presented secret to a principal."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import limits as limit_rules
from api.auth.cache import KeyCache
from api.auth.models import ApiKey, KeySecret
from api.auth.repository import ApiKeyRepository, find_by_secret_hash_unscoped
from api.auth.schemas import KeyCreate, KeyRead, KeyUpdate, limit_read
from api.auth.secrets import display_parts, generate_secret, hash_secret, looks_like_secret
from api.errors import AuthenticationFailed, InvalidRequest, NotFound, PaymentRequired
from api.kit.money import micros_to_usd, usd_to_micros
from api.kit.pagination import Page
from api.kit.time import utcnow
from api.usage import repository as usage_repository

MASTER = "master"
STANDARD = "standard"


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: uuid.UUID
    key: ApiKey
    tenant_limits: tuple[dict[str, Any], ...] = ()

    @property
    def key_id(self) -> uuid.UUID:
        return self.key.id

    @property
    def is_master(self) -> bool:
        return self.key.scope == MASTER


def _admit(
    key: ApiKey, secret_expires_at: datetime | None, tenant_limits: Sequence[dict[str, Any]]
) -> Principal:
    """Key status first (SPEC §5.2): revoked, expired or rotated out → 401; suspended → 402."""
    now = utcnow()
    if secret_expires_at is not None and secret_expires_at <= now:
        raise AuthenticationFailed()
    check_status(key, now)
    # The cached tuple itself, not a copy: the budget keeps per-key work keyed on it.
    limits = tenant_limits if isinstance(tenant_limits, tuple) else tuple(tenant_limits)
    return Principal(tenant_id=key.tenant_id, key=key, tenant_limits=limits)


def check_status(key: ApiKey, now: datetime) -> None:
    status = key.status_at(now)
    if status == "suspended":
        raise PaymentRequired()
    if status != "active":
        raise AuthenticationFailed()


async def recheck(session: AsyncSession, principal: Principal) -> None:
    """The key's status now, read from the database (the key cache may lag by its TTL), for
    work that outlives the request that authenticated it: the same error a new request gets."""
    key = await ApiKeyRepository(session, principal.tenant_id).get(principal.key_id)
    if key is None:
        raise AuthenticationFailed()
    check_status(key, utcnow())


async def principal_for_key(
    session: AsyncSession, tenant_id: uuid.UUID, key_id: uuid.UUID
) -> Principal:
    """The principal of a key, read by id, for work it queued earlier (an async job): the
    key's status now, and the error a new request with it would get (401 or 402)."""
    found = await ApiKeyRepository(session, tenant_id).with_tenant_limits(key_id)
    if found is None:
        raise AuthenticationFailed()
    key, tenant_limits = found
    return _admit(key, None, tenant_limits)


async def _lookup(
    session: AsyncSession, secret_hash: str
) -> tuple[ApiKey, KeySecret, list[dict[str, Any]]]:
    found = await find_by_secret_hash_unscoped(session, secret_hash)
    if found is None or not hmac.compare_digest(found[1].secret_hash, secret_hash):
        raise AuthenticationFailed()
    return found


async def authenticate(session: AsyncSession, pepper: bytes, secret: str) -> Principal:
    if not looks_like_secret(secret):
        raise AuthenticationFailed()
    key, key_secret, tenant_limits = await _lookup(session, hash_secret(pepper, secret))
    return _admit(key, key_secret.expires_at, tenant_limits)


async def authenticate_hash(session: AsyncSession, secret_hash: str) -> Principal:
    """The principal of a secret known only by its hash (a dashboard session keeps the hash of
    the master secret that signed in): the same checks as the secret itself would meet."""
    key, key_secret, tenant_limits = await _lookup(session, secret_hash)
    return _admit(key, key_secret.expires_at, tenant_limits)


async def authenticate_cached(
    sessionmaker: async_sessionmaker[AsyncSession], cache: KeyCache, pepper: bytes, secret: str
) -> Principal:
    """The proxy's lookup: from the key cache, or one short database session on a miss."""
    if not looks_like_secret(secret):
        raise AuthenticationFailed()
    secret_hash = hash_secret(pepper, secret)
    entry = cache.get(secret_hash)
    if entry is not None:
        return _admit(entry.key, entry.secret_expires_at, entry.tenant_limits)
    if cache.is_known_miss(secret_hash):
        raise AuthenticationFailed()
    generation = cache.generation
    try:
        async with sessionmaker() as session:
            key, key_secret, tenant_limits = await _lookup(session, secret_hash)
    except AuthenticationFailed:
        cache.put_miss(secret_hash)
        raise
    cache.put(secret_hash, key, key_secret.expires_at, tenant_limits, generation)
    return _admit(key, key_secret.expires_at, tenant_limits)


def _new_secret(session: AsyncSession, pepper: bytes, key: ApiKey) -> str:
    """Mint a secret for `key`: only its hash, prefix and last four are kept."""
    secret = generate_secret(test=key.test)
    key.prefix, key.last_four = display_parts(secret)
    session.add(KeySecret(key_id=key.id, secret_hash=hash_secret(pepper, secret)))
    return secret


async def create_master_key(
    session: AsyncSession, pepper: bytes, tenant_id: uuid.UUID, name: str = "master"
) -> tuple[ApiKey, str]:
    key = ApiKey(id=uuid.uuid4(), tenant_id=tenant_id, name=name, scope=MASTER, test=False)
    key.limits, key.metadata_ = [], {}
    session.add(key)
    secret = _new_secret(session, pepper, key)
    await session.flush()
    return key, secret


def _check_expiry(expires_at: datetime | None) -> None:
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidRequest("expires_at must be in the future.", param="expires_at")


def _limits_from(data: KeyCreate | KeyUpdate) -> list[limit_rules.Limit]:
    given = [item.to_limit() for item in data.limits or []]
    shorthand = None if data.max_spend_usd is None else usd_to_micros(data.max_spend_usd)
    return limit_rules.combine(given, shorthand)


async def create_key(
    session: AsyncSession, pepper: bytes, tenant_id: uuid.UUID, data: KeyCreate
) -> tuple[ApiKey, str]:
    _check_expiry(data.expires_at)
    key = ApiKey(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        name=data.name,
        scope=STANDARD,
        test=data.test,
        limits=[lim.as_json() for lim in _limits_from(data)],
        allowed_providers=data.allowed_providers,
        allowed_models=data.allowed_models,
        rpm=data.rpm,
        tpm=data.tpm,
        stripe_customer_id=data.stripe_customer_id,
        metadata_=data.metadata or {},
        expires_at=data.expires_at,
    )
    session.add(key)
    secret = _new_secret(session, pepper, key)
    await session.flush()
    return key, secret


async def get_key(session: AsyncSession, principal: Principal, key_id: uuid.UUID) -> ApiKey:
    key = await ApiKeyRepository(session, principal.tenant_id).get(key_id)
    if key is None:
        raise NotFound(f"No key with id {key_id}.", param="id")
    return key


async def list_keys(
    session: AsyncSession, principal: Principal, *, limit: int, cursor: str | None
) -> Page[ApiKey]:
    repository = ApiKeyRepository(session, principal.tenant_id)
    return await repository.paginate(repository.base(), limit=limit, cursor=cursor)


def _ensure_not_revoked(key: ApiKey) -> None:
    if key.revoked_at is not None:
        raise InvalidRequest(f"Key {key.id} is revoked.", param="id")


async def update_key(
    session: AsyncSession, principal: Principal, key_id: uuid.UUID, data: KeyUpdate
) -> ApiKey:
    key = await get_key(session, principal, key_id)
    _ensure_not_revoked(key)
    given = data.model_fields_set
    if "name" in given and data.name is not None:
        key.name = data.name
    if "limits" in given or "max_spend_usd" in given:
        current = [limit_rules.Limit.from_json(item) for item in key.limits]
        kept = current if "limits" not in given else [i.to_limit() for i in data.limits or []]
        if "max_spend_usd" in given:
            # The shorthand replaces the monthly spend limit; null removes it.
            kept = [lim for lim in kept if (lim.metric, lim.period) != ("spend_usd", "month")]
            shorthand = None if data.max_spend_usd is None else usd_to_micros(data.max_spend_usd)
        else:
            shorthand = None
        key.limits = [lim.as_json() for lim in limit_rules.combine(kept, shorthand)]
    for field in ("allowed_providers", "allowed_models", "rpm", "tpm", "stripe_customer_id"):
        if field in given:
            setattr(key, field, getattr(data, field))
    if "metadata" in given:
        key.metadata_ = data.metadata or {}
    if "expires_at" in given:
        _check_expiry(data.expires_at)
        key.expires_at = data.expires_at
    key.updated_at = utcnow()
    await session.flush()
    return key


async def revoke_key(session: AsyncSession, principal: Principal, key_id: uuid.UUID) -> ApiKey:
    key = await get_key(session, principal, key_id)
    if key.scope == MASTER:
        raise InvalidRequest("A master key cannot be revoked; rotate it instead.", param="id")
    if key.revoked_at is None:
        key.revoked_at = key.updated_at = utcnow()
        await ApiKeyRepository(session, principal.tenant_id).expire_secrets(key, key.revoked_at)
        await session.flush()
    return key


async def rotate_key(
    session: AsyncSession,
    pepper: bytes,
    principal: Principal,
    key_id: uuid.UUID,
    grace_seconds: int,
) -> tuple[ApiKey, str]:
    key = await get_key(session, principal, key_id)
    _ensure_not_revoked(key)
    now = utcnow()
    await ApiKeyRepository(session, principal.tenant_id).expire_secrets(
        key, now + timedelta(seconds=grace_seconds)
    )
    key.updated_at = now
    secret = _new_secret(session, pepper, key)
    await session.flush()
    return key, secret


async def render_key(
    session: AsyncSession | None, key: ApiKey, *, secret: str | None = None
) -> KeyRead:
    """The key object; with a session, each limit also shows what is used and what remains.

    Optional parts (`secret`, usage) are left unset rather than null; routes dump with
    `exclude_unset` so they appear only when they mean something.
    """
    now = utcnow()
    limits = [limit_rules.Limit.from_json(item) for item in key.limits]
    monthly = limit_rules.monthly_spend(limits)
    read = KeyRead(
        object="key",  # set explicitly: routes dump with exclude_unset
        id=str(key.id),
        name=key.name,
        scope=MASTER if key.scope == MASTER else STANDARD,
        test=key.test,
        status=key.status_at(now),
        prefix=key.prefix,
        last_four=key.last_four,
        max_spend_usd=None if monthly is None else micros_to_usd(monthly),
        limits=[limit_read(lim) for lim in limits],
        allowed_providers=key.allowed_providers,
        allowed_models=key.allowed_models,
        rpm=key.rpm,
        tpm=key.tpm,
        stripe_customer_id=key.stripe_customer_id,
        metadata=key.metadata_,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        created_at=key.created_at,
        updated_at=key.updated_at,
    )
    if secret is not None:
        read.secret = secret
    if session is None:
        return read
    usage_by_period: dict[str, usage_repository.KeyTotals] = {}
    for period in {lim.period for lim in limits} | {"month"}:
        since = limit_rules.period_start(period, now)  # type: ignore[arg-type]
        usage_by_period[period] = await usage_repository.key_totals(
            session, key.tenant_id, key.id, since
        )
    read.limits = [limit_read(lim, usage_by_period[lim.period].used(lim.metric)) for lim in limits]
    read.spend_micros = usage_by_period["month"].cost_micros
    read.spend_usd = micros_to_usd(read.spend_micros)
    if monthly is not None:
        read.remaining_micros = max(monthly - read.spend_micros, 0)
        read.remaining_usd = micros_to_usd(read.remaining_micros)
    return read
