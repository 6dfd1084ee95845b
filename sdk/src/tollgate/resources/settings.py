"""`client.settings` (the tenant's limits, alerts, failover, routing and secret shield) and
`client.alerts` (the budget alerts that fired)."""

from __future__ import annotations

from collections.abc import Sequence

from tollgate._http import Call
from tollgate._pagination import AsyncPaginator, SyncPage
from tollgate._types import NOT_GIVEN, NotGiven, given
from tollgate.resources._base import AsyncResource, SyncResource
from tollgate.types.params import (
    AlertSettingsParam,
    CacheSettingsParam,
    FailoverSettingsParam,
    LimitParam,
    RetentionSettingsParam,
    RoutingSettingsParam,
    SemanticCacheSettingsParam,
    ShieldPreset,
    ShieldRuleParam,
    ShieldSettingsParam,
)
from tollgate.types.settings import Alert, ShieldTest, TenantSettings, WebhookSecret

_PATH = "/v1/settings"


def _put(
    limits: Sequence[LimitParam] | NotGiven | None,
    alerts: AlertSettingsParam | NotGiven | None,
    failover: FailoverSettingsParam | NotGiven | None,
    routing: RoutingSettingsParam | NotGiven | None,
    shield: ShieldSettingsParam | NotGiven | None,
    **more: object,
) -> Call:
    body = given(
        limits=[dict(limit) for limit in limits] if isinstance(limits, Sequence) else limits,
        alerts=alerts,
        failover=failover,
        routing=routing,
        shield=shield,
        **more,
    )
    return Call("PUT", _PATH, json=body)


def _test_shield(
    text: str,
    rules: Sequence[ShieldRuleParam] | NotGiven,
    presets: Sequence[ShieldPreset] | NotGiven,
) -> Call:
    body = given(
        text=text,
        rules=[dict(rule) for rule in rules] if isinstance(rules, Sequence) else rules,
        presets=list(presets) if isinstance(presets, Sequence) else presets,
    )
    return Call("POST", "/v1/shield/test", json=body)


class Settings(SyncResource):
    def retrieve(self) -> TenantSettings:
        return self._one(Call("GET", _PATH), TenantSettings)

    def update(
        self,
        *,
        limits: Sequence[LimitParam] | NotGiven | None = NOT_GIVEN,
        alerts: AlertSettingsParam | NotGiven | None = NOT_GIVEN,
        failover: FailoverSettingsParam | NotGiven | None = NOT_GIVEN,
        routing: RoutingSettingsParam | NotGiven | None = NOT_GIVEN,
        shield: ShieldSettingsParam | NotGiven | None = NOT_GIVEN,
        cache: CacheSettingsParam | NotGiven | None = NOT_GIVEN,
        semantic_cache: SemanticCacheSettingsParam | NotGiven | None = NOT_GIVEN,
        retention: RetentionSettingsParam | NotGiven | None = NOT_GIVEN,
    ) -> TenantSettings:
        """Change the given groups only: `limits` on all keys together, where budget
        `alerts` go (`{"webhook_url": …, "emails": [...]}`), cross-provider `failover`
        (`{"enabled": True}`),
        the `routing` strategy, the secret `shield` (`{"enabled": True, "rules": […]}`), the
        response `cache` and `semantic_cache`, and how long traces and the log are kept
        (`retention`)."""
        call = _put(limits, alerts, failover, routing, shield, cache=cache,
                    semantic_cache=semantic_cache, retention=retention)  # fmt: skip
        return self._one(call, TenantSettings)

    def test_shield(
        self,
        text: str,
        *,
        rules: Sequence[ShieldRuleParam] | NotGiven = NOT_GIVEN,
        presets: Sequence[ShieldPreset] | NotGiven = NOT_GIVEN,
    ) -> ShieldTest:
        """Mask `text` as the secret shield would: with these rules and presets, or else
        the saved ones."""
        return self._one(_test_shield(text, rules, presets), ShieldTest)

    def create_webhook_secret(self) -> WebhookSecret:
        """A new secret that signs alerts, billing notices and job completions (shown once;
        it replaces the previous one)."""
        return self._one(Call("POST", f"{_PATH}/webhook-secret"), WebhookSecret)


class AsyncSettings(AsyncResource):
    async def retrieve(self) -> TenantSettings:
        return await self._one(Call("GET", _PATH), TenantSettings)

    async def update(
        self,
        *,
        limits: Sequence[LimitParam] | NotGiven | None = NOT_GIVEN,
        alerts: AlertSettingsParam | NotGiven | None = NOT_GIVEN,
        failover: FailoverSettingsParam | NotGiven | None = NOT_GIVEN,
        routing: RoutingSettingsParam | NotGiven | None = NOT_GIVEN,
        shield: ShieldSettingsParam | NotGiven | None = NOT_GIVEN,
        cache: CacheSettingsParam | NotGiven | None = NOT_GIVEN,
        semantic_cache: SemanticCacheSettingsParam | NotGiven | None = NOT_GIVEN,
        retention: RetentionSettingsParam | NotGiven | None = NOT_GIVEN,
    ) -> TenantSettings:
        """Change the given groups only."""
        call = _put(limits, alerts, failover, routing, shield, cache=cache,
                    semantic_cache=semantic_cache, retention=retention)  # fmt: skip
        return await self._one(call, TenantSettings)

    async def test_shield(
        self,
        text: str,
        *,
        rules: Sequence[ShieldRuleParam] | NotGiven = NOT_GIVEN,
        presets: Sequence[ShieldPreset] | NotGiven = NOT_GIVEN,
    ) -> ShieldTest:
        """Mask `text` as the secret shield would."""
        return await self._one(_test_shield(text, rules, presets), ShieldTest)

    async def create_webhook_secret(self) -> WebhookSecret:
        """A new secret that signs alerts, billing notices and job completions (shown once)."""
        return await self._one(Call("POST", f"{_PATH}/webhook-secret"), WebhookSecret)


def _alerts(limit: int | NotGiven, cursor: str | NotGiven) -> Call:
    return Call("GET", "/v1/alerts", params=given(limit=limit, cursor=cursor))


class Alerts(SyncResource):
    def list(
        self, *, limit: int | NotGiven = NOT_GIVEN, cursor: str | NotGiven = NOT_GIVEN
    ) -> SyncPage[Alert]:
        """The budget alerts that fired, newest first, with how delivery went."""
        return self._page(_alerts(limit, cursor), Alert)


class AsyncAlerts(AsyncResource):
    def list(
        self, *, limit: int | NotGiven = NOT_GIVEN, cursor: str | NotGiven = NOT_GIVEN
    ) -> AsyncPaginator[Alert]:
        """The budget alerts that fired, newest first."""
        return self._page(_alerts(limit, cursor), Alert)
