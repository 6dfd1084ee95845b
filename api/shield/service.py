"""A tenant's `shield` settings as a compiled `Shield`, and `POST /v1/shield/test`."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import regex

from api.errors import ShieldFailed
from api.gateway.providers.base import (
    ByteStream,
    Provider,
    UpstreamRequest,
    UpstreamResponse,
    UpstreamStream,
)
from api.shield.engine import Shield, ShieldTimeout, compile_detectors
from api.shield.presets import PRESET_NAMES
from api.shield.schemas import ShieldMatch, ShieldSettings, ShieldTestIn, ShieldTestOut

logger = logging.getLogger("tollgate.shield")


def build(stored: dict[str, Any]) -> Shield:
    """The shield of stored settings (the `shield` group of `tenant.settings`), enabled or not.
    A stored rule that no longer compiles makes a shield that cannot complete: the tenant's
    `fail` setting decides what happens to its requests."""
    presets = stored.get("presets")
    names = PRESET_NAMES if presets is None else [str(name) for name in presets]
    rules = [rule for rule in stored.get("rules") or [] if isinstance(rule, dict)]
    fail_open = stored.get("fail") == "open"
    try:
        return Shield(compile_detectors(names, rules), fail_open=fail_open)
    except (regex.error, ValueError, KeyError, TypeError) as exc:
        logger.error("a stored shield rule does not compile: %r", exc)
        return Shield((), fail_open=fail_open, broken="rules")


def load(settings: dict[str, Any]) -> Shield | None:
    """What the gateway applies to a tenant's requests: None unless the shield is enabled."""
    stored = settings.get("shield")
    if not isinstance(stored, dict) or not stored.get("enabled"):
        return None
    return build(stored)


def failed(detector: str) -> ShieldFailed:
    return ShieldFailed(
        f"The secret shield could not finish masking this request in time (detector "
        f"{detector!r}), and the tenant's shield fails closed: nothing was sent upstream."
    )


def test(settings: dict[str, Any], data: ShieldTestIn) -> ShieldTestOut:
    """Mask `data.text` with the given rules and presets, or else the tenant's saved ones."""
    saved = ShieldSettings.stored(settings.get("shield"))
    stored: dict[str, Any] = {
        "presets": data.presets if data.presets is not None else saved.presets,
        "rules": [
            rule.model_dump() for rule in (data.rules if data.rules is not None else saved.rules)
        ],
    }
    shield = build(stored)
    try:
        masked, matches = shield.mask_text(data.text)
    except ShieldTimeout as timeout:
        raise failed(timeout.detector) from None
    return ShieldTestOut(
        masked=masked,
        matches=[ShieldMatch(name=m.name, start=m.start, end=m.end) for m in matches],
    )


class ShieldedProvider:
    """A provider whose requests are masked first: for the calls that go to a provider outside
    `PooledProvider` (exact token counting), so they too never carry what the shield masks."""

    def __init__(self, provider: Provider, shield: Shield) -> None:
        self._provider = provider
        self._shield = shield
        self.name = provider.name
        self.dialect = provider.dialect

    async def _masked(self, request: UpstreamRequest) -> UpstreamRequest:
        try:
            body, _ = await self._shield.mask_body_async(request.body)
        except ShieldTimeout as timeout:
            if not self._shield.fail_open:
                raise failed(timeout.detector) from None
            logger.warning("the secret shield timed out (%s); sent unmasked (fail open)",
                           timeout.detector)  # fmt: skip
            return request
        return request if body is request.body else dataclasses.replace(request, body=body)

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        return await self._provider.send(await self._masked(request))

    async def open_stream(self, request: UpstreamRequest) -> UpstreamStream:
        return await self._provider.open_stream(await self._masked(request))

    async def open_bytes(self, request: UpstreamRequest) -> ByteStream:
        return await self._provider.open_bytes(await self._masked(request))


def shielded(provider: Provider, shield: Shield | None) -> Provider:
    return provider if shield is None else ShieldedProvider(provider, shield)
