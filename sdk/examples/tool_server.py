"""A webhook server for Tollgate: one tool, `get_weather`, and one endpoint for the signed
events Tollgate sends a tenant (budget alerts, billing notices, job completions).

Every request is checked with `tollgate.webhooks.verify` before its body is read: a tool call
with the tool's `signing_secret`, an event with the tenant's webhook secret. Run it with

    pip install fastapi uvicorn ./sdk
    WEATHER_TOOL_SECRET=… TOLLGATE_WEBHOOK_SECRET=… python sdk/examples/tool_server.py

and register the tool with `webhook_url="http://<this host>:8001/tools/get_weather"`
(Tollgate refuses private addresses unless `TOLLGATE_ALLOW_PRIVATE_WEBHOOKS=true`).
"""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from tollgate import WebhookVerificationError, webhooks

FORECASTS = {"lisbon": "sunny, 24 °C", "oslo": "light snow, -3 °C"}


def create_app(secrets: MutableMapping[str, str]) -> FastAPI:
    """`secrets` maps each tool's name to its signing secret, and `"events"` to the tenant's
    webhook secret; it is read on every request, so a rotated secret can be swapped in."""
    app = FastAPI(title="Tollgate tool server")
    app.state.events = []  # what arrived on /events; a real server would act on each one
    seen_calls: dict[str, dict[str, Any]] = {}  # tool_call_id -> answer (Tollgate may retry)

    async def verified(request: Request, secret_name: str) -> Any:
        body = await request.body()
        try:
            webhooks.verify(
                secrets.get(secret_name, ""),
                request.headers.get(webhooks.SIGNATURE_HEADER),
                body,
            )
        except WebhookVerificationError as exc:
            raise HTTPException(401, str(exc)) from None
        return json.loads(body)

    @app.post("/tools/get_weather")
    async def get_weather(request: Request) -> dict[str, Any]:
        call = await verified(request, "get_weather")
        # Tollgate sends the call's id as Idempotency-Key: answer a repeat the same way.
        if call["tool_call_id"] in seen_calls:
            return seen_calls[call["tool_call_id"]]
        city = str(call["input"].get("city", ""))
        forecast = FORECASTS.get(city.lower())
        answer: dict[str, Any] = (
            {"content": f"{city}: {forecast}"}
            if forecast
            else {"content": f"No forecast for {city!r}.", "is_error": True}
        )
        seen_calls[call["tool_call_id"]] = answer
        return answer

    @app.post("/events", status_code=204)
    async def events(request: Request) -> None:
        event = await verified(request, "events")
        app.state.events.append(event)  # e.g. budget.threshold_reached, job.completed

    return app


if __name__ == "__main__":
    import uvicorn

    secrets = {
        "get_weather": os.environ["WEATHER_TOOL_SECRET"],
        "events": os.environ.get("TOLLGATE_WEBHOOK_SECRET", ""),
    }
    host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8001"))
    uvicorn.run(create_app(secrets), host=host, port=port)
