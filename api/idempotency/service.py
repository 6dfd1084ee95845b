"""`Idempotency-Key` for creates that must not happen twice (Stripe's contract).

The first request with a key runs and its response is stored (sealed: it may carry a secret
shown once) in the same transaction as what it created. A retry with the same key and the same
body gets that response again, marked `idempotent-replayed: true`; the same key with another
body is a 400. Two concurrent requests with one key: the second waits on the row the first
inserted and replays its answer. Keys are remembered for 24 hours, per tenant and route.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import Conflict, InvalidRequest
from api.idempotency import repository
from api.idempotency.models import MAX_KEY_LENGTH
from api.kit.crypto import SecretBox
from api.kit.time import utcnow

REMEMBER = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Replay:
    status_code: int
    body: Any


def request_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


async def claim(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    route: str,
    key: str,
    body_hash: str,
    box: SecretBox,
) -> Replay | None:
    """Claim `key` for this request, or return the answer it already got."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.", param="Idempotency-Key"
        )
    await repository.forget_older_than(session, tenant_id, route, key, utcnow() - REMEMBER)
    if await repository.insert(session, tenant_id, route, key, body_hash):
        return None
    existing = await repository.get(session, tenant_id, route, key)
    if existing is None or existing.response is None or existing.status_code is None:
        raise Conflict("A request with this Idempotency-Key is still in progress.")
    if existing.request_hash != body_hash:
        raise InvalidRequest(
            "This Idempotency-Key was used with a different request body.",
            param="Idempotency-Key",
        )
    return Replay(existing.status_code, orjson.loads(box.open(existing.response)))


async def remember(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    route: str,
    key: str,
    status_code: int,
    body: Any,
    box: SecretBox,
) -> None:
    record = await repository.get(session, tenant_id, route, key)
    if record is not None:
        record.status_code = status_code
        record.response = box.seal(orjson.dumps(body).decode())
