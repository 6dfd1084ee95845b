"""Google's Gemini API shape, inbound (SPEC §5.2), for the google-genai SDK and Gemini REST
clients, on any model:

    POST /v1beta/models/{model}:generateContent
    POST /v1beta/models/{model}:streamGenerateContent  `?alt=sse`: SSE `data:` chunks; without
                                                        it one JSON array, as Google streams
    POST /v1beta/models/{model}:countTokens
    GET  /v1beta/models, GET /v1beta/models/{model}    Google's list shape, this key's models

The POSTs are served under `/v1/models/{model}:…` too (google-genai's default API version);
`GET /v1/models` stays OpenAI's list. The key comes in `x-goog-api-key` (or the other families'
headers), or in `?key=`, which `api.middleware.google_query_key` moves into that header before
anything can log the URL. `{model}` may be `provider/model`.

Field names are read in either of the spellings Google takes (`thinking_budget` as well as
`thinkingBudget`: google-genai sends both kinds) and sent on in lowerCamelCase. A Gemini model
gets the client's body as sent, with only the gateway's edits: the model (in the path),
`generationConfig.maxOutputTokens` no larger than what was reserved (always sent: Gemini counts
thoughts within it, so it bounds what a call bills), and what the cost policy of its fields
drops (`exposure.gemini`: hosted tools, unknown fields). Its stream is relayed chunk by chunk
as it came. Other models are translated through the IR (`dialects/translated.py`). A stream's
last chunk (the one with `finishReason`) goes out after the call is metered. Errors are
Google-shaped (`api/error_handlers.py`), a mid-stream one a last `{"error": …}` chunk.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, Awaitable, Sequence
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.auth.service import Principal
from api.deps import gateway_principal
from api.errors import (
    AppError,
    InvalidRequest,
    MissingApiKey,
    NotFound,
    RequestTooLarge,
    UpstreamError,
)
from api.gateway import exposure as exposure_rules
from api.gateway import traces
from api.gateway.catalog import ModelEntry
from api.gateway.dialects import entry, translated
from api.gateway.dialects.anthropic.routes import (
    COUNT_MAX_BYTES,
    ESTIMATE_HEADER,
    count_admitted,
    counting_provider,
)
from api.gateway.dialects.openai.routes import visible_models
from api.gateway.exposure import Exposure, UnknownFields
from api.gateway.pipeline import Call, Gateway, check_access, record_refusal
from api.gateway.providers.base import UpstreamRequest, UpstreamStream
from api.gateway.relay import EventStream, JSONBody
from api.gateway.sse import SSEEvent, frame
from api.gateway.translate import gemini, gemini_fields, gemini_stream, ir

router = APIRouter(tags=["gateway"])

GENERATE_PATH = "/v1beta/models/{model}:generateContent"
STREAM_PATH = "/v1beta/models/{model}:streamGenerateContent"
COUNT_PATH = "/v1beta/models/{model}:countTokens"
_VERSIONS = ("/v1beta", "/v1")  # google-genai calls v1 unless told otherwise
_FINISH = b'"finishReason"'
_PAGE_SIZE, _MAX_PAGE_SIZE = 50, 1000  # Google's default and largest `pageSize`


def _family(*, sse: bool) -> translated.Family:
    return translated.Family(
        "gemini",
        gemini.parse_request,
        gemini.render_response,
        lambda body, _: gemini_stream.StreamEncoder(sse=sse, thoughts=_wants_thoughts(body)),
        render_echoing=_render,
    )


def _wants_thoughts(body: dict[str, Any]) -> bool:
    """Gemini returns thought summaries only to `thinkingConfig.includeThoughts`."""
    generation = body.get("generationConfig")
    thinking = generation.get("thinkingConfig") if isinstance(generation, dict) else None
    return isinstance(thinking, dict) and thinking.get("includeThoughts") is True


def _render(answer: ir.ChatResponse, body: dict[str, Any]) -> dict[str, Any]:
    if not _wants_thoughts(body):
        answer.parts = [part for part in answer.parts if not isinstance(part, ir.Thinking)]
    return gemini.render_response(answer)


GEMINI = _family(sse=True)
GEMINI_ARRAY = _family(sse=False)


def budget_view(body: dict[str, Any]) -> dict[str, Any]:
    """What the reservation reads (`messages`, `tools`, `max_tokens`): the system instruction
    counted with the contents, an inline image at an image's token bound (not its bytes)."""
    contents = body.get("contents")
    generation = body.get("generationConfig")
    return {
        "messages": [
            body.get("systemInstruction"),
            *(_bounded(c) for c in (contents if isinstance(contents, list) else ())),
        ],
        "tools": body.get("tools"),
        "max_tokens": generation.get("maxOutputTokens") if isinstance(generation, dict) else None,
    }


def _bounded(content: Any) -> Any:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return content
    return {**content, "parts": [_image_marker(part) for part in parts]}


def _image_marker(part: Any) -> Any:
    data = part.get("inlineData") if isinstance(part, dict) else None
    if isinstance(data, dict) and str(data.get("mimeType", "")).startswith("image/"):
        return {"type": "image"}  # `tokens.prompt_token_bound` counts it at its bound
    return part


def _positive(value: Any, param: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise InvalidRequest(f"{param}: must be a positive integer.", param=param)


def _check_body(body: dict[str, Any]) -> None:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise InvalidRequest(
            "contents: a non-empty list of contents is required.", param="contents"
        )
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
            raise InvalidRequest(
                f"contents[{i}].parts: a list of parts is required.", param=f"contents[{i}].parts"
            )
    for name in ("systemInstruction", "generationConfig", "toolConfig"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise InvalidRequest(f"{name}: must be an object.", param=name)
    if body.get("tools") is not None and not isinstance(body["tools"], list):
        raise InvalidRequest("tools: must be a list.", param="tools")
    generation = body.get("generationConfig") or {}
    _positive(generation.get("maxOutputTokens"), "generationConfig.maxOutputTokens")
    thinking = generation.get("thinkingConfig")
    if thinking is not None and not isinstance(thinking, dict):
        raise InvalidRequest(
            "generationConfig.thinkingConfig: must be an object.",
            param="generationConfig.thinkingConfig",
        )
    budget = (thinking or {}).get("thinkingBudget")
    if budget is not None and (
        not isinstance(budget, int) or isinstance(budget, bool) or budget < -1
    ):
        raise InvalidRequest(
            "generationConfig.thinkingConfig.thinkingBudget: an integer, -1 for dynamic.",
            param="generationConfig.thinkingConfig.thinkingBudget",
        )


def _checker(stream: bool) -> entry.Check:
    def check(body: dict[str, Any], unknown: UnknownFields) -> tuple[bool, Exposure]:
        _check_body(body)
        return stream, exposure_rules.gemini(body, unknown)

    return check


def _model_of(request: Request) -> str:
    model = request.path_params.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: a model name is required in the path.", param="model")
    return model.removeprefix("models/")


def _canonical(body: dict[str, Any]) -> dict[str, Any]:
    """The body with Gemini's field names in one spelling (`gemini_fields.canonical`)."""
    out: dict[str, Any] = gemini_fields.canonical(body)
    return out


async def _principal(request: Request) -> Principal:
    try:
        return await gateway_principal(request)
    except MissingApiKey:
        raise MissingApiKey(
            "No API key provided. Send it as 'x-goog-api-key' (or 'Authorization: Bearer "
            "<key>'), or as '?key=' in the URL."
        ) from None


async def _proxy(request: Request, endpoint: entry.Endpoint) -> Response:
    """`entry.proxy`, with the model from the path (Gemini's body has none)."""
    timing = traces.of_request(request.state)
    principal = await _principal(request)
    timing.step("auth")
    gateway: Gateway = request.state.gateway
    request_id = request.state.request_id
    try:
        model = _model_of(request)
        if endpoint.path == STREAM_PATH and request.query_params.get("alt", "json") != "sse":
            if request.query_params.get("alt", "json") != "json":
                raise InvalidRequest("alt: sse, or json for one JSON array.", param="alt")
            endpoint = STREAM_ARRAY
        body = _canonical(await entry.read_json_object(request))
    except AppError as error:
        record_refusal(gateway, principal, request_id, endpoint.path, "", "", error, timing=timing)
        raise
    body["model"] = model
    return await entry.serve(
        gateway, principal, request_id, endpoint, body, headers=request.headers, timing=timing
    )


async def generate_content(request: Request) -> Response:
    return await _proxy(request, GENERATE)


async def stream_generate_content(request: Request) -> Response:
    return await _proxy(request, STREAM)


async def _answer(call: Call, body: dict[str, Any], stream: bool, *, sse: bool) -> Response:
    """The answer from `call.provider` (run again by a cross-provider failover)."""
    if call.provider.dialect != "gemini":
        call.warn(_untranslated(body))
        family = GEMINI if sse else GEMINI_ARRAY
        response = await translated.respond(call, family, body, stream=stream)
        return _as_array(response) if stream and not sse else response
    out = _native_body(body, call)
    path = gemini.request_path(call.route.upstream_model, stream=stream)
    upstream = UpstreamRequest(path, out, stream)
    async with call.failures_recorded():
        if stream:
            opened = await call.provider.open_stream(upstream)
            response = EventStream(_relay(call, body, opened, sse), call.response_headers)
            return response if sse else _as_array(response)
        answer = await call.provider.send(upstream)
        payload = translated.json_answer(answer.body, call.provider.name)
        usage = gemini.usage_from(payload.get("usageMetadata"))
        if usage.input_tokens == 0 and usage.output_tokens == 0:  # an answer without usage
            usage = translated.estimated_usage(usage, _parsed(body, call), _texts(payload))
        await call.finish(usage)
    payload["provider"] = call.provider.name
    return JSONBody(orjson.dumps(payload), call.response_headers)


def _untranslated(body: dict[str, Any]) -> list[str]:
    """What a translated request loses that the client may count on."""
    generation = body.get("generationConfig") or {}
    if isinstance(generation.get("candidateCount"), int) and generation["candidateCount"] > 1:
        return ["generationConfig.candidateCount dropped: this model answers one candidate"]
    return []


def _native_body(body: dict[str, Any], call: Call) -> dict[str, Any]:
    """The client's body for a Gemini upstream: the cost policy's edits, no `model` (it is in
    the path), and `maxOutputTokens` no larger than what was reserved."""
    out = exposure_rules.apply_gemini(call.exposure or Exposure(), body)
    out = {k: v for k, v in out.items() if k != "model"}
    generation = dict(out.get("generationConfig") or {})
    held = translated.output_cap(call)
    given = generation.get("maxOutputTokens")
    if not isinstance(given, int) or given > held:
        generation["maxOutputTokens"] = held
    out["generationConfig"] = generation
    return out


def _parsed(body: dict[str, Any], call: Call) -> ir.ChatRequest:
    """The request in the IR, only to estimate a prompt the upstream did not count."""
    fields = ("systemInstruction", "contents", "tools")
    return translated.estimable_request(gemini.parse_request, body, call.model, fields)


def _texts(payload: dict[str, Any]) -> list[str]:
    try:
        return translated.response_text(gemini.parse_response(payload))
    except AppError:
        return []


def _as_array(response: Response) -> Response:
    """A stream answered as one JSON array (no `alt=sse`): JSON, not an event stream."""
    response.raw_headers = [
        (b"content-type", b"application/json; charset=utf-8") if name == b"content-type" else
        (name, value)
        for name, value in response.raw_headers
    ]  # fmt: skip
    return response


class _Verbatim(translated.ToClient):
    """Gemini chunks relayed as they came (or as the elements of one JSON array). The chunk
    with the `finishReason` (and the final usage) is held until the call is metered."""

    def __init__(self, sse: bool) -> None:
        self._sse = sse
        self._written = 0
        self._held: SSEEvent | None = None

    def content(self, event: SSEEvent | None, _items: Sequence[ir.StreamEvent]) -> bytes:
        if event is None:
            return b""
        out = self._release()
        if _FINISH in event.data:
            self._held = event
            return out
        return out + self._piece(event.data, event)

    def end(
        self,
        event: SSEEvent | None,
        _items: Sequence[ir.StreamEvent],
        terminal: ir.MessageEnd | ir.StreamError,
    ) -> bytes:
        out = self._release()
        if event is not None:  # the provider's own error chunk
            out += self._piece(event.data, event)
        elif isinstance(terminal, ir.StreamError):  # a failure on the gateway's side
            out += self._piece(orjson.dumps(gemini_stream.error_chunk(terminal)), None)
        if self._sse:
            return out
        return out + (b"]" if self._written else b"[]")

    def _release(self) -> bytes:
        held, self._held = self._held, None
        return self._piece(held.data, held) if held is not None else b""

    def _piece(self, data: bytes, event: SSEEvent | None) -> bytes:
        self._written += 1
        if self._sse:
            return frame(event) if event is not None else b"data: " + data + b"\r\n\r\n"
        return (b"[" if self._written == 1 else b",\r\n") + data


def _relay(
    call: Call, body: dict[str, Any], stream: UpstreamStream, sse: bool
) -> AsyncGenerator[bytes, None]:
    decoder = gemini_stream.StreamDecoder()
    return translated.relay_events(
        call, stream, decoder, _Verbatim(sse), lambda: _parsed(body, call)
    )


def _answer_sse(call: Call, body: dict[str, Any], stream: bool) -> Awaitable[Response]:
    return _answer(call, body, stream, sse=True)


def _answer_array(call: Call, body: dict[str, Any], stream: bool) -> Awaitable[Response]:
    return _answer(call, body, stream, sse=False)


GENERATE = entry.Endpoint(GENERATE_PATH, _checker(False), budget_view, _answer_sse)
STREAM = entry.Endpoint(STREAM_PATH, _checker(True), budget_view, _answer_sse)
STREAM_ARRAY = dataclasses.replace(STREAM, answer=_answer_array)


# Counting ---------------------------------------------------------------------------------


async def count_tokens(request: Request) -> Response:
    """Exact for Gemini models (Google counts); an o200k estimate for the others, marked
    `x-tollgate-token-count: estimated`. Not a model call: nothing is metered."""
    principal = await _principal(request)
    gateway: Gateway = request.state.gateway
    body = _canonical(await entry.read_json_object(request))
    counted = _counted(body)
    route = gateway.catalog.resolve(_model_of(request))
    check_access(principal, route)
    count_admitted(gateway, principal.key)
    test = principal.key.test
    provider = await counting_provider(gateway, principal, route.provider, test)
    if provider.dialect == "gemini":
        model = route.upstream_model
        out = dict(body)
        if "generateContentRequest" in out:  # Google requires its model, named as a resource
            out["generateContentRequest"] = {**counted, "model": f"models/{model}"}
        path = f"/v1beta/models/{model}:countTokens"
        answer = await provider.send(UpstreamRequest(path, out, False))
        payload = translated.json_answer(answer.body, provider.name)
        if not isinstance(payload.get("totalTokens"), int):
            raise UpstreamError(f"The {provider.name} provider sent a malformed token count.")
        return JSONBody(orjson.dumps(payload), {ESTIMATE_HEADER: "exact"})
    if len(await request.body()) > COUNT_MAX_BYTES:
        raise RequestTooLarge(
            f"Bodies over {COUNT_MAX_BYTES // (1024 * 1024)} MiB are not counted for this model."
        )
    # CPU work in proportion to the body, off the event loop (as `/v1/messages/count_tokens`).
    total = await asyncio.to_thread(_estimate, counted, route.entry.id)
    return JSONBody(orjson.dumps({"totalTokens": total}), {ESTIMATE_HEADER: "estimated"})


def _counted(body: dict[str, Any]) -> dict[str, Any]:
    """The generateContent request a countTokens body counts: its `generateContentRequest`,
    or its `contents` alone."""
    inner = body.get("generateContentRequest")
    if inner is not None:
        if not isinstance(inner, dict):
            raise InvalidRequest(
                "generateContentRequest: must be an object.", param="generateContentRequest"
            )
        counted = inner
        where = "generateContentRequest.contents"
    else:
        counted = {"contents": body.get("contents")}
        where = "contents"
    contents = counted.get("contents")
    if not isinstance(contents, list) or not contents:
        raise InvalidRequest(f"{where}: a non-empty list of contents is required.", param=where)
    return counted


def _estimate(counted: dict[str, Any], model: str) -> int:
    return translated.prompt_estimate(gemini.parse_request(counted, model=model))


# Models -----------------------------------------------------------------------------------


def _model(entry: ModelEntry) -> dict[str, Any]:
    """A catalog entry as Google's Model resource, with the gateway's provider and prices."""
    return {
        "name": f"models/{entry.id}",
        "baseModelId": entry.id,
        "version": entry.id,
        "displayName": entry.display_name,
        "description": f"{entry.display_name} ({entry.provider}), through Tollgate.",
        "inputTokenLimit": entry.context_window,
        "outputTokenLimit": entry.max_output_tokens,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
        "provider": entry.provider,
        "pricing": entry.price.as_json(),
    }


def _page(value: str | None, param: str, default: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise InvalidRequest(f"{param}: must be a non-negative integer.", param=param)
    return int(value)


@router.get("/v1beta/models")
async def list_gemini_models(request: Request) -> dict[str, Any]:
    """The models this key may use, in Google's list shape (`pageSize`, `pageToken`)."""
    principal = await _principal(request)
    gateway: Gateway = request.state.gateway
    query = request.query_params
    size = min(_page(query.get("pageSize"), "pageSize", _PAGE_SIZE) or _PAGE_SIZE, _MAX_PAGE_SIZE)
    start = _page(query.get("pageToken"), "pageToken", 0)
    # Google's API here serves generateContent: the chat models (embeddings are OpenAI-shaped).
    entries = [e for e in await visible_models(principal.key, gateway) if e.kind == "chat"]
    page: dict[str, Any] = {"models": [_model(e) for e in entries[start : start + size]]}
    if start + size < len(entries):
        page["nextPageToken"] = str(start + size)
    return page


@router.get("/v1beta/models/{model:path}")
async def get_gemini_model(request: Request) -> dict[str, Any]:
    principal = await _principal(request)
    gateway: Gateway = request.state.gateway
    name = _model_of(request)
    found = gateway.catalog.lookup(name.partition("/")[2] or name)
    if (
        found is None
        or found.kind != "chat"
        or found not in await visible_models(principal.key, gateway)
    ):
        raise NotFound(f"models/{name} is not found, or this key may not use it.")
    return _model(found)


for _version in _VERSIONS:
    for _action, _handler in (
        ("generateContent", generate_content),
        ("streamGenerateContent", stream_generate_content),
        ("countTokens", count_tokens),
    ):
        router.add_api_route(
            f"{_version}/models/{{model:path}}:{_action}", _handler, methods=["POST"],
            name=f"{_action}_{_version.strip('/')}",
        )  # fmt: skip
