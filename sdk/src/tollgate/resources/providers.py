"""`client.providers`: the tenant's own provider keys (BYOK), preferred over the operator's."""

from __future__ import annotations

from tollgate._http import Call, segment
from tollgate._pagination import AsyncPaginator, SyncPage
from tollgate._types import NOT_GIVEN, NotGiven, given
from tollgate.resources._base import AsyncResource, SyncResource
from tollgate.types.provider import Provider, ProviderDeleted, ProviderName

_PATH = "/v1/providers"


def _put(
    name: ProviderName, api_key: str, base_url: str | NotGiven | None, enabled: bool | NotGiven
) -> Call:
    body = {"api_key": api_key, **given(base_url=base_url, enabled=enabled)}
    return Call("PUT", f"{_PATH}/{segment(name)}", json=body)


class Providers(SyncResource):
    def set(
        self,
        name: ProviderName,
        *,
        api_key: str,
        base_url: str | NotGiven | None = NOT_GIVEN,
        enabled: bool | NotGiven = NOT_GIVEN,
    ) -> Provider:
        """Store the tenant's own key for `name`, checked with the provider first (a wrong
        key is a `BadRequestError` carrying the provider's message) and kept encrypted."""
        return self._one(_put(name, api_key, base_url, enabled), Provider)

    def list(self) -> SyncPage[Provider]:
        """Every provider key the tenant stored: status and last four, never the key."""
        return self._page(Call("GET", _PATH), Provider)

    def retrieve(self, name: ProviderName) -> Provider:
        return self._one(Call("GET", f"{_PATH}/{segment(name)}"), Provider)

    def delete(self, name: ProviderName) -> ProviderDeleted:
        """Forget the tenant's key; the operator's account serves the tenant again."""
        return self._one(Call("DELETE", f"{_PATH}/{segment(name)}"), ProviderDeleted)


class AsyncProviders(AsyncResource):
    async def set(
        self,
        name: ProviderName,
        *,
        api_key: str,
        base_url: str | NotGiven | None = NOT_GIVEN,
        enabled: bool | NotGiven = NOT_GIVEN,
    ) -> Provider:
        """Store the tenant's own key for `name`, checked with the provider first."""
        return await self._one(_put(name, api_key, base_url, enabled), Provider)

    def list(self) -> AsyncPaginator[Provider]:
        """Every provider key the tenant stored: status and last four, never the key."""
        return self._page(Call("GET", _PATH), Provider)

    async def retrieve(self, name: ProviderName) -> Provider:
        return await self._one(Call("GET", f"{_PATH}/{segment(name)}"), Provider)

    async def delete(self, name: ProviderName) -> ProviderDeleted:
        """Forget the tenant's key; the operator's account serves the tenant again."""
        return await self._one(Call("DELETE", f"{_PATH}/{segment(name)}"), ProviderDeleted)
