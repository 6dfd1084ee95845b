"""`client.keys`: one key per end-user, minted and managed with the tenant's master key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from tollgate._http import Call, segment
from tollgate._pagination import AsyncPaginator, SyncPage
from tollgate._types import NOT_GIVEN, NotGiven, given
from tollgate.resources._base import AsyncResource, SyncResource
from tollgate.types.key import Key
from tollgate.types.params import LimitParam

_PATH = "/v1/keys"


def _fields(
    *,
    max_spend_usd: float | NotGiven | None,
    limits: Sequence[LimitParam] | NotGiven | None,
    allowed_providers: Sequence[str] | NotGiven | None,
    allowed_models: Sequence[str] | NotGiven | None,
    rpm: int | NotGiven | None,
    tpm: int | NotGiven | None,
    stripe_customer_id: str | NotGiven | None,
    metadata: Mapping[str, str] | NotGiven | None,
    expires_at: datetime | NotGiven | None,
) -> dict[str, Any]:
    body = given(
        max_spend_usd=max_spend_usd,
        limits=[dict(limit) for limit in limits] if isinstance(limits, Sequence) else limits,
        allowed_providers=list(allowed_providers)
        if isinstance(allowed_providers, Sequence)
        else allowed_providers,
        allowed_models=list(allowed_models)
        if isinstance(allowed_models, Sequence)
        else allowed_models,
        rpm=rpm,
        tpm=tpm,
        stripe_customer_id=stripe_customer_id,
        metadata=dict(metadata) if isinstance(metadata, Mapping) else metadata,
        expires_at=expires_at.isoformat() if isinstance(expires_at, datetime) else expires_at,
    )
    return body


def _list(limit: int | NotGiven, cursor: str | NotGiven) -> Call:
    return Call("GET", _PATH, params=given(limit=limit, cursor=cursor))


class Keys(SyncResource):
    def create(
        self,
        *,
        name: str,
        test: bool | NotGiven = NOT_GIVEN,
        max_spend_usd: float | NotGiven | None = NOT_GIVEN,
        limits: Sequence[LimitParam] | NotGiven | None = NOT_GIVEN,
        allowed_providers: Sequence[str] | NotGiven | None = NOT_GIVEN,
        allowed_models: Sequence[str] | NotGiven | None = NOT_GIVEN,
        rpm: int | NotGiven | None = NOT_GIVEN,
        tpm: int | NotGiven | None = NOT_GIVEN,
        stripe_customer_id: str | NotGiven | None = NOT_GIVEN,
        metadata: Mapping[str, str] | NotGiven | None = NOT_GIVEN,
        expires_at: datetime | NotGiven | None = NOT_GIVEN,
        idempotency_key: str | NotGiven = NOT_GIVEN,
    ) -> Key:
        """Mint a standard key for an end-user. Its `secret` is in this answer only: store it.

        `max_spend_usd` caps the key's spend per calendar month (UTC); `limits` adds day, month
        or lifetime limits on spend, tokens or requests. A `test=True` key (`qlk_test_…`) is
        answered by the built-in mock provider, for free. A retry with the same
        `idempotency_key` (one is made for you and reused across retries) gets the first key
        back, not a second one.
        """
        body = {"name": name, **given(test=test), **_fields(
            max_spend_usd=max_spend_usd, limits=limits, allowed_providers=allowed_providers,
            allowed_models=allowed_models, rpm=rpm, tpm=tpm,
            stripe_customer_id=stripe_customer_id, metadata=metadata, expires_at=expires_at,
        )}  # fmt: skip
        return self._one(Call("POST", _PATH, json=body, idempotency_key=idempotency_key), Key)

    def list(
        self, *, limit: int | NotGiven = NOT_GIVEN, cursor: str | NotGiven = NOT_GIVEN
    ) -> SyncPage[Key]:
        """Keys, newest first; iterating the page fetches the next ones as needed."""
        return self._page(_list(limit, cursor), Key)

    def retrieve(self, key_id: str) -> Key:
        """A key with this month's spend and what each limit has left."""
        return self._one(Call("GET", f"{_PATH}/{segment(key_id)}"), Key)

    def retrieve_self(self) -> Key:
        """The key this client authenticates with (any key may read itself)."""
        return self._one(Call("GET", f"{_PATH}/self"), Key)

    def update(
        self,
        key_id: str,
        *,
        name: str | NotGiven = NOT_GIVEN,
        max_spend_usd: float | NotGiven | None = NOT_GIVEN,
        limits: Sequence[LimitParam] | NotGiven | None = NOT_GIVEN,
        allowed_providers: Sequence[str] | NotGiven | None = NOT_GIVEN,
        allowed_models: Sequence[str] | NotGiven | None = NOT_GIVEN,
        rpm: int | NotGiven | None = NOT_GIVEN,
        tpm: int | NotGiven | None = NOT_GIVEN,
        stripe_customer_id: str | NotGiven | None = NOT_GIVEN,
        metadata: Mapping[str, str] | NotGiven | None = NOT_GIVEN,
        expires_at: datetime | NotGiven | None = NOT_GIVEN,
    ) -> Key:
        """Change the given fields only; `None` clears one (`max_spend_usd=None`: no cap)."""
        body = {**given(name=name), **_fields(
            max_spend_usd=max_spend_usd, limits=limits, allowed_providers=allowed_providers,
            allowed_models=allowed_models, rpm=rpm, tpm=tpm,
            stripe_customer_id=stripe_customer_id, metadata=metadata, expires_at=expires_at,
        )}  # fmt: skip
        return self._one(Call("PATCH", f"{_PATH}/{segment(key_id)}", json=body), Key)

    def revoke(self, key_id: str) -> Key:
        """Revoke at once; the key and its history stay readable."""
        return self._one(Call("DELETE", f"{_PATH}/{segment(key_id)}"), Key)

    def rotate(self, key_id: str, *, grace_seconds: int | NotGiven = NOT_GIVEN) -> Key:
        """A new secret for the same key (id, limits, history); the old secret keeps working
        `grace_seconds` longer (default 0: it stops at once)."""
        body = given(grace_seconds=grace_seconds)
        return self._one(Call("POST", f"{_PATH}/{segment(key_id)}/rotate", json=body), Key)


class AsyncKeys(AsyncResource):
    async def create(
        self,
        *,
        name: str,
        test: bool | NotGiven = NOT_GIVEN,
        max_spend_usd: float | NotGiven | None = NOT_GIVEN,
        limits: Sequence[LimitParam] | NotGiven | None = NOT_GIVEN,
        allowed_providers: Sequence[str] | NotGiven | None = NOT_GIVEN,
        allowed_models: Sequence[str] | NotGiven | None = NOT_GIVEN,
        rpm: int | NotGiven | None = NOT_GIVEN,
        tpm: int | NotGiven | None = NOT_GIVEN,
        stripe_customer_id: str | NotGiven | None = NOT_GIVEN,
        metadata: Mapping[str, str] | NotGiven | None = NOT_GIVEN,
        expires_at: datetime | NotGiven | None = NOT_GIVEN,
        idempotency_key: str | NotGiven = NOT_GIVEN,
    ) -> Key:
        """Mint a standard key for an end-user. Its `secret` is in this answer only: store it."""
        body = {"name": name, **given(test=test), **_fields(
            max_spend_usd=max_spend_usd, limits=limits, allowed_providers=allowed_providers,
            allowed_models=allowed_models, rpm=rpm, tpm=tpm,
            stripe_customer_id=stripe_customer_id, metadata=metadata, expires_at=expires_at,
        )}  # fmt: skip
        call = Call("POST", _PATH, json=body, idempotency_key=idempotency_key)
        return await self._one(call, Key)

    def list(
        self, *, limit: int | NotGiven = NOT_GIVEN, cursor: str | NotGiven = NOT_GIVEN
    ) -> AsyncPaginator[Key]:
        """Keys, newest first: `await` it for one page, `async for` over it for all."""
        return self._page(_list(limit, cursor), Key)

    async def retrieve(self, key_id: str) -> Key:
        """A key with this month's spend and what each limit has left."""
        return await self._one(Call("GET", f"{_PATH}/{segment(key_id)}"), Key)

    async def retrieve_self(self) -> Key:
        """The key this client authenticates with (any key may read itself)."""
        return await self._one(Call("GET", f"{_PATH}/self"), Key)

    async def update(
        self,
        key_id: str,
        *,
        name: str | NotGiven = NOT_GIVEN,
        max_spend_usd: float | NotGiven | None = NOT_GIVEN,
        limits: Sequence[LimitParam] | NotGiven | None = NOT_GIVEN,
        allowed_providers: Sequence[str] | NotGiven | None = NOT_GIVEN,
        allowed_models: Sequence[str] | NotGiven | None = NOT_GIVEN,
        rpm: int | NotGiven | None = NOT_GIVEN,
        tpm: int | NotGiven | None = NOT_GIVEN,
        stripe_customer_id: str | NotGiven | None = NOT_GIVEN,
        metadata: Mapping[str, str] | NotGiven | None = NOT_GIVEN,
        expires_at: datetime | NotGiven | None = NOT_GIVEN,
    ) -> Key:
        """Change the given fields only; `None` clears one (`max_spend_usd=None`: no cap)."""
        body = {**given(name=name), **_fields(
            max_spend_usd=max_spend_usd, limits=limits, allowed_providers=allowed_providers,
            allowed_models=allowed_models, rpm=rpm, tpm=tpm,
            stripe_customer_id=stripe_customer_id, metadata=metadata, expires_at=expires_at,
        )}  # fmt: skip
        return await self._one(Call("PATCH", f"{_PATH}/{segment(key_id)}", json=body), Key)

    async def revoke(self, key_id: str) -> Key:
        """Revoke at once; the key and its history stay readable."""
        return await self._one(Call("DELETE", f"{_PATH}/{segment(key_id)}"), Key)

    async def rotate(self, key_id: str, *, grace_seconds: int | NotGiven = NOT_GIVEN) -> Key:
        """A new secret for the same key; the old one works `grace_seconds` longer."""
        body = given(grace_seconds=grace_seconds)
        return await self._one(Call("POST", f"{_PATH}/{segment(key_id)}/rotate", json=body), Key)
