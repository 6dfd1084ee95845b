"""Fixtures for the billing tests: localstripe on loopback, and settings that point at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from api.settings import Settings
from tests.fakes.stripe import LocalStripe


@pytest.fixture(scope="session")
def localstripe_server() -> Iterator[LocalStripe]:
    server = LocalStripe().start()
    yield server
    server.stop()


@pytest.fixture
def stripe_fake(localstripe_server: LocalStripe) -> Iterator[LocalStripe]:
    """localstripe on loopback, emptied for each test (see tests/fakes/stripe.py)."""
    localstripe_server.reset()
    yield localstripe_server
    localstripe_server.reset()


@pytest.fixture
def billing_settings(settings: Settings, stripe_fake: LocalStripe) -> Settings:
    return settings.model_copy(
        update={
            "stripe_api_base": stripe_fake.url,
            "stripe_max_network_retries": 0,
            "allow_private_webhooks": True,  # the test receivers listen on loopback
        }
    )
