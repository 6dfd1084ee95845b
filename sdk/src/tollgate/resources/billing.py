"""`client.billing`: the tenant's own Stripe account, month-end syncs and their runs."""

from __future__ import annotations

from functools import cached_property
from typing import Literal, overload

from tollgate._http import Call, segment
from tollgate._pagination import AsyncPaginator, SyncPage
from tollgate._types import NOT_GIVEN, NotGiven, given
from tollgate.resources._base import AsyncResource, SyncResource
from tollgate.types.billing import BillingPlan, BillingRun, StripeAccount

_STRIPE = "/v1/billing/stripe"
_RUNS = "/v1/billing/runs"


def _put(
    secret_key: str, webhook_secret: str, currency: str | NotGiven, markup_bps: int | NotGiven
) -> Call:
    body = {
        "secret_key": secret_key,
        "webhook_secret": webhook_secret,
        **given(currency=currency, markup_bps=markup_bps),
    }
    return Call("PUT", _STRIPE, json=body)


def _sync(period: str, dry_run: bool) -> Call:
    # Safe to repeat: a sync never bills a customer twice for a period.
    return Call("POST", "/v1/billing/sync", json={"period": period, "dry_run": dry_run})


def _runs(limit: int | NotGiven, cursor: str | NotGiven) -> Call:
    return Call("GET", _RUNS, params=given(limit=limit, cursor=cursor))


class Stripe(SyncResource):
    def retrieve(self) -> StripeAccount:
        return self._one(Call("GET", _STRIPE), StripeAccount)

    def set(
        self,
        *,
        secret_key: str,
        webhook_secret: str,
        currency: str | NotGiven = NOT_GIVEN,
        markup_bps: int | NotGiven = NOT_GIVEN,
    ) -> StripeAccount:
        """Store the tenant's Stripe secret key and webhook signing secret (encrypted, never
        shown again), the invoice currency and a markup in basis points (2000: +20 %)."""
        return self._one(_put(secret_key, webhook_secret, currency, markup_bps), StripeAccount)


class AsyncStripe(AsyncResource):
    async def retrieve(self) -> StripeAccount:
        return await self._one(Call("GET", _STRIPE), StripeAccount)

    async def set(
        self,
        *,
        secret_key: str,
        webhook_secret: str,
        currency: str | NotGiven = NOT_GIVEN,
        markup_bps: int | NotGiven = NOT_GIVEN,
    ) -> StripeAccount:
        """Store the tenant's Stripe credentials (encrypted), currency and markup."""
        call = _put(secret_key, webhook_secret, currency, markup_bps)
        return await self._one(call, StripeAccount)


class Runs(SyncResource):
    def list(
        self, *, limit: int | NotGiven = NOT_GIVEN, cursor: str | NotGiven = NOT_GIVEN
    ) -> SyncPage[BillingRun]:
        """Billing runs, newest first (without their records: `retrieve` one for those)."""
        return self._page(_runs(limit, cursor), BillingRun)

    def retrieve(self, run_id: str) -> BillingRun:
        """A run with each customer's record: invoice, state, lines."""
        return self._one(Call("GET", f"{_RUNS}/{segment(run_id)}"), BillingRun)


class AsyncRuns(AsyncResource):
    def list(
        self, *, limit: int | NotGiven = NOT_GIVEN, cursor: str | NotGiven = NOT_GIVEN
    ) -> AsyncPaginator[BillingRun]:
        """Billing runs, newest first."""
        return self._page(_runs(limit, cursor), BillingRun)

    async def retrieve(self, run_id: str) -> BillingRun:
        """A run with each customer's record: invoice, state, lines."""
        return await self._one(Call("GET", f"{_RUNS}/{segment(run_id)}"), BillingRun)


class Billing(SyncResource):
    @cached_property
    def stripe(self) -> Stripe:
        return Stripe(self._http)

    @cached_property
    def runs(self) -> Runs:
        return Runs(self._http)

    @overload
    def sync(self, *, period: str, dry_run: Literal[False] = False) -> BillingRun: ...

    @overload
    def sync(self, *, period: str, dry_run: Literal[True]) -> BillingPlan: ...

    def sync(self, *, period: str, dry_run: bool = False) -> BillingRun | BillingPlan:
        """Invoice a month that has ended (`"YYYY-MM"`, UTC) through the tenant's Stripe: one
        invoice per customer, one line per linked key. Re-running never bills twice; a run
        left incomplete resumes. `dry_run=True` returns what it would bill, sending nothing."""
        body = self._http.request(_sync(period, dry_run))
        return BillingPlan.model_validate(body) if dry_run else BillingRun.model_validate(body)


class AsyncBilling(AsyncResource):
    @cached_property
    def stripe(self) -> AsyncStripe:
        return AsyncStripe(self._http)

    @cached_property
    def runs(self) -> AsyncRuns:
        return AsyncRuns(self._http)

    @overload
    async def sync(self, *, period: str, dry_run: Literal[False] = False) -> BillingRun: ...

    @overload
    async def sync(self, *, period: str, dry_run: Literal[True]) -> BillingPlan: ...

    async def sync(self, *, period: str, dry_run: bool = False) -> BillingRun | BillingPlan:
        """Invoice a month that has ended through the tenant's Stripe, once."""
        body = await self._http.request(_sync(period, dry_run))
        return BillingPlan.model_validate(body) if dry_run else BillingRun.model_validate(body)
