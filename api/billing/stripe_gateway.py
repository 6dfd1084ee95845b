"""Every Stripe call Tollgate makes, through stripe-python's `StripeClient` (API reference:
https://docs.stripe.com/api, version pinned by stripe-python 16).

One gateway per tenant's secret key. The API base is a setting so tests can point it at a local
fake; telemetry is off; stripe-python retries network failures itself (`max_network_retries`)
and re-sends the same idempotency key, which is how Stripe makes a retried create safe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import stripe

from api.settings import Settings

# Metadata Tollgate writes on what it creates, and finds again after a crash.
RECORD_META = "tollgate_record_id"
KEY_META = "tollgate_key_id"


@dataclass(frozen=True, slots=True)
class InvoiceState:
    id: str
    status: str | None  # draft | open | paid | uncollectible | void
    customer: str | None
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class ItemRequest:
    customer: str
    invoice: str
    currency: str
    amount_cents: int
    description: str
    period_start: int
    period_end: int
    metadata: dict[str, str]
    idempotency_key: str


def _metadata(obj: object) -> dict[str, str]:
    metadata = getattr(obj, "metadata", None)
    if metadata is None:
        return {}
    plain = metadata.to_dict() if hasattr(metadata, "to_dict") else dict(metadata)
    return {str(k): str(v) for k, v in plain.items()}


def _state(invoice: stripe.Invoice) -> InvoiceState:
    customer = getattr(invoice, "customer", None)
    return InvoiceState(
        id=str(invoice.id),
        status=getattr(invoice, "status", None),
        customer=customer if isinstance(customer, str) else getattr(customer, "id", None),
        metadata=_metadata(invoice),
    )


class HTTPXClient(stripe.HTTPXClient):
    """stripe-python's httpx client sends form bodies as `data=<str>`, which httpx deprecates
    (raw bodies go in `content=`); send them that way."""

    def _get_request_args_kwargs(self, method: str, url: str, headers: Any, post_data: Any) -> Any:
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        data = kwargs.pop("data", None)
        if data:
            kwargs["content"] = data
        return [args, kwargs]


class StripeGateway:
    def __init__(
        self,
        secret_key: str,
        *,
        api_base: str,
        max_network_retries: int,
        timeout_seconds: float,
    ) -> None:
        stripe.enable_telemetry = False  # no request metrics sent back to Stripe
        self._http = HTTPXClient(timeout=timeout_seconds)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base.rstrip("/")},
            max_network_retries=max_network_retries,
            http_client=self._http,
        )

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]  # untyped in stripe

    async def create_invoice(
        self,
        *,
        customer: str,
        currency: str,
        description: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> str:
        """A draft invoice that takes only the items Tollgate adds to it; Stripe collects it
        once it is finalized."""
        invoice = await self._client.v1.invoices.create_async(
            {
                "customer": customer,
                "currency": currency,
                "collection_method": "charge_automatically",
                "auto_advance": False,
                "pending_invoice_items_behavior": "exclude",
                "description": description,
                "metadata": metadata,
            },
            {"idempotency_key": idempotency_key},
        )
        return str(invoice.id)

    async def find_invoice(self, customer: str, record_id: str) -> str | None:
        """The invoice an earlier, interrupted attempt created for `record_id`, if any."""
        page = await self._client.v1.invoices.list_async({"customer": customer, "limit": 100})
        for invoice in page.data:
            if _state(invoice).metadata.get(RECORD_META) == record_id:
                return str(invoice.id)
        return None

    async def create_invoice_item(self, item: ItemRequest) -> str:
        created = await self._client.v1.invoice_items.create_async(
            {
                "customer": item.customer,
                "invoice": item.invoice,
                "currency": item.currency,
                "amount": item.amount_cents,
                "description": item.description,
                "period": {"start": item.period_start, "end": item.period_end},
                "metadata": item.metadata,
            },
            {"idempotency_key": item.idempotency_key},
        )
        return str(created.id)

    async def invoice_item_ids(self, invoice: str) -> dict[str, str]:
        """The items already on `invoice`, by the key id in their metadata."""
        page = await self._client.v1.invoice_items.list_async({"invoice": invoice, "limit": 100})
        found: dict[str, str] = {}
        for item in page.data:
            key_id = _metadata(item).get(KEY_META)
            if key_id:
                found[str(key_id)] = str(item.id)
        return found

    async def finalize_invoice(self, invoice: str, *, idempotency_key: str) -> str:
        """Finalize and let Stripe collect (auto_advance); an invoice that is already past
        draft (an earlier attempt finalized it) counts as done. Returns its status."""
        try:
            finalized = await self._client.v1.invoices.finalize_invoice_async(
                invoice, {"auto_advance": True}, {"idempotency_key": idempotency_key}
            )
        except stripe.InvalidRequestError:
            current = await self.retrieve_invoice(invoice)
            if current.status in (None, "draft"):
                raise
            return current.status
        return str(getattr(finalized, "status", None) or "open")

    async def retrieve_invoice(self, invoice: str) -> InvoiceState:
        return _state(await self._client.v1.invoices.retrieve_async(invoice))


GatewayFactory = Callable[[str], StripeGateway]


def gateway_factory(settings: Settings) -> GatewayFactory:
    """Builds a gateway for a tenant's secret key with the operator's Stripe settings."""

    def build(secret_key: str) -> StripeGateway:
        return StripeGateway(
            secret_key,
            api_base=settings.stripe_api_base,
            max_network_retries=settings.stripe_max_network_retries,
            timeout_seconds=settings.stripe_timeout_seconds,
        )

    return build
