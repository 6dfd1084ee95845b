"""OpenAI Responses endpoint: `POST /v1/responses`, streaming and not (SPEC §5.2).

Stateless: nothing is stored, so `previous_response_id` and `conversation` are refused (400
naming the field) and `store` is ignored; clients send the whole conversation in `input`. Every
provider is reached through the IR (`dialects/translated.py`): OpenAI and DeepSeek models via
Chat Completions, so Responses-only features (built-in tools, `include`, structured `text`
formats) are dropped, built-in tools with an `X-Tollgate-Warning`. Errors are OpenAI-shaped,
a mid-stream one an `error` event.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.deps import gateway_principal
from api.errors import AppError, InvalidRequest
from api.gateway import resilience
from api.gateway.dialects import translated
from api.gateway.dialects.openai.routes import read_json_object
from api.gateway.pipeline import Gateway, record_refusal, start_call

router = APIRouter(tags=["gateway"])

RESPONSES_PATH = "/v1/responses"
_STATEFUL = ("previous_response_id", "conversation")


def budget_view(body: dict[str, Any]) -> dict[str, Any]:
    """What the reservation reads (`messages`, `tools`, `max_tokens`)."""
    return {
        "messages": [body.get("instructions"), body.get("input")],
        "tools": body.get("tools"),
        "max_tokens": body.get("max_output_tokens"),
    }


def _check_body(body: dict[str, Any]) -> bool:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: a model name is required.", param="model")
    for name in _STATEFUL:
        if body.get(name) is not None:
            raise InvalidRequest(
                f"{name}: this gateway keeps no response state; send the whole conversation "
                "in `input`.",
                param=name,
            )
    given = body.get("input")
    if not (isinstance(given, str) and given) and not (isinstance(given, list) and given):
        raise InvalidRequest("input: a string or a non-empty list of items.", param="input")
    value = body.get("max_output_tokens")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise InvalidRequest(
            "max_output_tokens: must be a positive integer.", param="max_output_tokens"
        )
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream: must be a boolean.", param="stream")
    return bool(stream)


@router.post(RESPONSES_PATH)
async def create_response(request: Request) -> Response:
    principal = await gateway_principal(request)
    gateway: Gateway = request.state.gateway
    request_id = request.state.request_id
    try:
        body = await read_json_object(request)
        stream = _check_body(body)
    except AppError as error:  # a bad body is still a request of this key's: log it, at no cost
        record_refusal(gateway, principal, request_id, RESPONSES_PATH, "", "", error)
        raise
    call = await start_call(
        gateway, principal, request_id, RESPONSES_PATH, body["model"], budget_view(body),
        dialects=translated.DIALECTS, session=resilience.session_key(request.headers, body),
    )  # fmt: skip
    if call.trace is None:
        return await translated.respond(call, translated.RESPONSES, body, stream=stream)
    return await resilience.serve(
        call, lambda: translated.respond(call, translated.RESPONSES, body, stream=stream)
    )
