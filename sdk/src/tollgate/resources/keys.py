"""`client.keys`: mint and manage one key per end-user (needs the tenant's master key)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from tollgate._http import AsyncHTTP, SyncHTTP
from tollgate._types import NOT_GIVEN, NotGiven, given
from tollgate.types.key import Key, KeyList

_PATH = "/v1/keys"


def _fields(
    *,
    max_spend_usd: float | NotGiven | None,
    limits: Sequence[Mapping[str, Any]] | NotGiven | None,
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
        limits=list(limits) if isinstance(limits, Sequence) else limits,
        allowed_providers=allowed_providers,
        allowed_models=allowed_models,
        rpm=rpm,
        tpm=tpm,
        stripe_customer_id=stripe_customer_id,
        metadata=metadata,
        expires_at=expires_at,
    )
    if isinstance(body.get("expires_at"), datetime):
        body["expires_at"] = body["expires_at"].isoformat()
    return body


class Keys:
    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

    def create(
        self,
        *,
        name: str,
        test: bool | NotGiven = NOT_GIVEN,
        max_spend_usd: float | NotGiven | None = NOT_GIVEN,
        limits: Sequence[Mapping[str, Any]] | NotGiven | None = NOT_GIVEN,
        allowed_providers: Sequence[str] | NotGiven | None = NOT_GIVEN,
        allowed_models: Sequence[str] | NotGiven | None = NOT_GIVEN,
        rpm: int | NotGiven | None = NOT_GIVEN,
        tpm: int | NotGiven | None = NOT_GIVEN,
        stripe_customer_id: str | NotGiven | None = NOT_GIVEN,
        metadata: Mapping[str, str] | NotGiven | None = NOT_GIVEN,
        expires_at: datetime | NotGiven | None = NOT_GIVEN,
    ) -> Key:
        """Mint a standard key. Its `secret` is in this response only: store it."""
        body = {"name": name, **given(test=test), **_fields(
            max_spend_usd=max_spend_usd, limits=limits, allowed_providers=allowed_providers,
            allowed_models=allowed_models, rpm=rpm, tpm=tpm,
            stripe_customer_id=stripe_customer_id, metadata=metadata, expires_at=expires_at,
        )}  # fmt: skip
        return Key.model_validate(self._http.request("POST", _PATH, json=body))

    def list(
        self, *, limit: int | NotGiven = NOT_GIVEN, cursor: str | NotGiven = NOT_GIVEN
    ) -> KeyList:
        """One page of keys, newest first."""
        params = given(limit=limit, cursor=cursor)
        return KeyList.model_validate(self._http.request("GET", _PATH, params=params))

    def iter(self, *, page_size: int = 100) -> Iterator[Key]:
        """Every key, fetching pages as needed."""
        cursor: str | NotGiven = NOT_GIVEN
        while True:
            page = self.list(limit=page_size, cursor=cursor)
            yield from page.data
            if not page.has_more or page.next_cursor is None:
                return
            cursor = page.next_cursor

    def retrieve(self, key_id: str) -> Key:
        """A key with this month's spend and what each limit has left."""
        return Key.model_validate(self._http.request("GET", f"{_PATH}/{key_id}"))

    def retrieve_self(self) -> Key:
        """The key this client authenticates with."""
        return Key.model_validate(self._http.request("GET", f"{_PATH}/self"))

    def update(
        self,
        key_id: str,
        *,
        name: str | NotGiven = NOT_GIVEN,
        max_spend_usd: float | NotGiven | None = NOT_GIVEN,
        limits: Sequence[Mapping[str, Any]] | NotGiven | None = NOT_GIVEN,
        allowed_providers: Sequence[str] | NotGiven | None = NOT_GIVEN,
        allowed_models: Sequence[str] | NotGiven | None = NOT_GIVEN,
        rpm: int | NotGiven | None = NOT_GIVEN,
        tpm: int | NotGiven | None = NOT_GIVEN,
        stripe_customer_id: str | NotGiven | None = NOT_GIVEN,
        metadata: Mapping[str, str] | NotGiven | None = NOT_GIVEN,
        expires_at: datetime | NotGiven | None = NOT_GIVEN,
    ) -> Key:
        """Change the given fields only; `None` clears a field (`max_spend_usd=None`: no cap)."""
        body = {**given(name=name), **_fields(
            max_spend_usd=max_spend_usd, limits=limits, allowed_providers=allowed_providers,
            allowed_models=allowed_models, rpm=rpm, tpm=tpm,
            stripe_customer_id=stripe_customer_id, metadata=metadata, expires_at=expires_at,
        )}  # fmt: skip
        return Key.model_validate(self._http.request("PATCH", f"{_PATH}/{key_id}", json=body))

    def revoke(self, key_id: str) -> Key:
        """Revoke at once; the key and its history stay readable."""
        return Key.model_validate(self._http.request("DELETE", f"{_PATH}/{key_id}"))

    def rotate(self, key_id: str, *, grace_seconds: int | NotGiven = NOT_GIVEN) -> Key:
        """A new secret for the same key; the old one works `grace_seconds` longer (default 0)."""
        body = given(grace_seconds=grace_seconds)
        return Key.model_validate(self._http.request("POST", f"{_PATH}/{key_id}/rotate", json=body))


class AsyncKeys:
    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

    async def create(
        self,
        *,
        name: str,
        test: bool | NotGiven = NOT_GIVEN,
        max_spend_usd: float | NotGiven | None = NOT_GIVEN,
        limits: Sequence[Mapping[str, Any]] | NotGiven | None = NOT_GIVEN,
        allowed_providers: Sequence[str] | NotGiven | None = NOT_GIVEN,
        allowed_models: Sequence[str] | NotGiven | None = NOT_GIVEN,
        rpm: int | NotGiven | None = NOT_GIVEN,
        tpm: int | NotGiven | None = NOT_GIVEN,
        stripe_customer_id: str | NotGiven | None = NOT_GIVEN,
        metadata: Mapping[str, str] | NotGiven | None = NOT_GIVEN,
        expires_at: datetime | NotGiven | None = NOT_GIVEN,
    ) -> Key:
        """Mint a standard key. Its `secret` is in this response only: store it."""
        body = {"name": name, **given(test=test), **_fields(
            max_spend_usd=max_spend_usd, limits=limits, allowed_providers=allowed_providers,
            allowed_models=allowed_models, rpm=rpm, tpm=tpm,
            stripe_customer_id=stripe_customer_id, metadata=metadata, expires_at=expires_at,
        )}  # fmt: skip
        return Key.model_validate(await self._http.request("POST", _PATH, json=body))

    async def list(
        self, *, limit: int | NotGiven = NOT_GIVEN, cursor: str | NotGiven = NOT_GIVEN
    ) -> KeyList:
        """One page of keys, newest first."""
        params = given(limit=limit, cursor=cursor)
        return KeyList.model_validate(await self._http.request("GET", _PATH, params=params))

    async def iter(self, *, page_size: int = 100) -> AsyncIterator[Key]:
        """Every key, fetching pages as needed."""
        cursor: str | NotGiven = NOT_GIVEN
        while True:
            page = await self.list(limit=page_size, cursor=cursor)
            for key in page.data:
                yield key
            if not page.has_more or page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def retrieve(self, key_id: str) -> Key:
        """A key with this month's spend and what each limit has left."""
        return Key.model_validate(await self._http.request("GET", f"{_PATH}/{key_id}"))

    async def retrieve_self(self) -> Key:
        """The key this client authenticates with."""
        return Key.model_validate(await self._http.request("GET", f"{_PATH}/self"))

    async def update(
        self,
        key_id: str,
        *,
        name: str | NotGiven = NOT_GIVEN,
        max_spend_usd: float | NotGiven | None = NOT_GIVEN,
        limits: Sequence[Mapping[str, Any]] | NotGiven | None = NOT_GIVEN,
        allowed_providers: Sequence[str] | NotGiven | None = NOT_GIVEN,
        allowed_models: Sequence[str] | NotGiven | None = NOT_GIVEN,
        rpm: int | NotGiven | None = NOT_GIVEN,
        tpm: int | NotGiven | None = NOT_GIVEN,
        stripe_customer_id: str | NotGiven | None = NOT_GIVEN,
        metadata: Mapping[str, str] | NotGiven | None = NOT_GIVEN,
        expires_at: datetime | NotGiven | None = NOT_GIVEN,
    ) -> Key:
        """Change the given fields only; `None` clears a field (`max_spend_usd=None`: no cap)."""
        body = {**given(name=name), **_fields(
            max_spend_usd=max_spend_usd, limits=limits, allowed_providers=allowed_providers,
            allowed_models=allowed_models, rpm=rpm, tpm=tpm,
            stripe_customer_id=stripe_customer_id, metadata=metadata, expires_at=expires_at,
        )}  # fmt: skip
        response = await self._http.request("PATCH", f"{_PATH}/{key_id}", json=body)
        return Key.model_validate(response)

    async def revoke(self, key_id: str) -> Key:
        """Revoke at once; the key and its history stay readable."""
        return Key.model_validate(await self._http.request("DELETE", f"{_PATH}/{key_id}"))

    async def rotate(self, key_id: str, *, grace_seconds: int | NotGiven = NOT_GIVEN) -> Key:
        """A new secret for the same key; the old one works `grace_seconds` longer (default 0)."""
        body = given(grace_seconds=grace_seconds)
        response = await self._http.request("POST", f"{_PATH}/{key_id}/rotate", json=body)
        return Key.model_validate(response)
