"""localstripe (a stateful fake Stripe server) on a loopback port, for the billing tests.

It runs in a background thread with its own event loop, bound to 127.0.0.1 (its own command
listens on every interface and keeps state in /tmp). Tollgate's code is written for the real
Stripe; localstripe lacks a few things that code uses, and this test setup adds them as a small
middleware in front of localstripe's own handlers:

- `POST /v1/invoices` without a subscription: localstripe only invoices a subscription or
  pending items (the usual workaround is a $0 subscription per customer). The shim builds the
  draft invoice directly, keeps its metadata and currency, and ignores `auto_advance`,
  `collection_method` and `pending_invoice_items_behavior` (localstripe rejects them).
- `POST /v1/invoiceitems` with `invoice` and `period[start|end]`: localstripe takes the period as
  `period_start`/`period_end` and does not put the item on the invoice; the shim does both.
- `GET /v1/invoiceitems?invoice=…`: localstripe lists only pending items.
- `POST /v1/invoices/{id}/finalize`: missing; the shim finalizes the draft (400 when it is not a
  draft, as Stripe answers).

Idempotency keys are ignored by localstripe, and its payments send `invoice.payment_succeeded`
rather than `invoice.paid`; Tollgate handles both names.
"""

from __future__ import annotations

import asyncio
import re
import threading
import warnings
from typing import Any

from aiohttp import web

from tools.testenv import free_port

with warnings.catch_warnings():
    # localstripe registers some plain (non-async) handlers, which aiohttp deprecates.
    warnings.simplefilter("ignore", DeprecationWarning)
    from localstripe import resources, server, webhooks

_FINALIZE = re.compile(r"^/v1/invoices/(in_\w+)/finalize$")


async def _create_invoice(request: web.Request) -> web.Response:
    data = await server.get_post_data(request) or {}
    invoice = resources.Invoice(
        customer=data.get("customer"),
        metadata=data.get("metadata") or {},
        description=data.get("description"),
    )
    if data.get("currency"):
        invoice.currency = data["currency"]
    return server.json_response(invoice._export())


async def _create_item(request: web.Request) -> web.Response:
    data: dict[str, Any] = await server.get_post_data(request) or {}
    period = data.pop("period", None)
    if isinstance(period, dict):
        data["period_start"], data["period_end"] = period.get("start"), period.get("end")
    item = resources.InvoiceItem._api_create(**data)
    if item.invoice:
        invoice = resources.Invoice._api_retrieve(item.invoice)
        invoice.lines._list.append(resources.InvoiceLineItem(item))
    return server.json_response(item._export())


def _items_of(invoice_id: str) -> web.Response:
    resources.Invoice._api_retrieve(invoice_id)  # 404 when unknown
    items = [
        value._export()
        for key, value in list(resources.store.items())
        if key.startswith("invoiceitem:") and value.invoice == invoice_id
    ]
    body = {"object": "list", "data": items, "has_more": False, "url": "/v1/invoiceitems"}
    return server.json_response(body)


def _finalize(invoice_id: str) -> web.Response:
    invoice = resources.Invoice._api_retrieve(invoice_id)
    if invoice.status != "draft":
        raise server.UserError(400, "This invoice is already finalized.")
    invoice._finalize()
    return server.json_response(invoice._export())


@web.middleware
async def _shim(request: web.Request, handler: Any) -> web.StreamResponse:
    path, method = request.path, request.method
    if method == "POST" and path == "/v1/invoices":
        return await _create_invoice(request)
    if method == "POST" and path == "/v1/invoiceitems":
        return await _create_item(request)
    if method == "GET" and path == "/v1/invoiceitems" and "invoice" in request.query:
        return _items_of(request.query["invoice"])
    match = _FINALIZE.match(path)
    if method == "POST" and match:
        return _finalize(match.group(1))
    response: web.StreamResponse = await handler(request)
    return response


class LocalStripe:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> LocalStripe:
        resources.store.dump_to_disk = lambda: None  # type: ignore[method-assign]
        if _shim not in server.app.middlewares:
            server.app.middlewares.append(_shim)  # innermost: after its auth and error layers
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    async def _serve(self) -> None:
        self._runner = web.AppRunner(server.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def reset(self) -> None:
        self.call(self._clear)

    @staticmethod
    def _clear() -> None:
        resources.store.clear()
        webhooks._webhooks.clear()

    def call(self, func: Any, *args: Any) -> Any:
        """Run `func` on the server's loop (its state is not thread-safe)."""

        async def run() -> Any:
            return func(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
