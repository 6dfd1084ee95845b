"""Cost is a policy per field: what a request's fields can add to its bill, read before it is
reserved (SPEC §7; the decision for fields Tollgate does not know: docs/decisions/0002).

A hard cap holds only if the reserved worst case bounds what the upstream can bill. The prompt
and the output cap are priced in `api/gateway/budget.py`; every other field a client can send
is, per family:

- *free*: known to add nothing to the bill (the reviewed lists below);
- *priced*: it multiplies or adds cost, and the worst case includes it (`n`, cache writes,
  server tools and their per-use fees, documents whose tokens the body's size does not bound);
- *bounded*: clamped upstream so the worst case holds (a server tool's `max_uses`);
- *refused*: `400` naming it, where no bound is known (`web_search_options`, audio output,
  priority service tiers, code execution, MCP servers, stored prompts);
- *unknown*: a top-level field on none of these lists. It is dropped and named in
  `X-Tollgate-Warning` (the default), passed, or refused: `Gateway.unknown_fields`.

Only a same-family upstream ever sees these fields: a translated request carries what the IR
maps and nothing else. `docs/keys-and-caps.md` has the table of choices.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from api.errors import InvalidRequest

UnknownFields = Literal["drop", "pass", "refuse"]

# Reviewed against each API reference (December 2026): fields that add nothing to the bill.
CHAT_FREE = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options",
        "temperature", "top_p", "stop", "seed", "frequency_penalty", "presence_penalty",
        "logit_bias", "logprobs", "top_logprobs", "response_format", "tools", "tool_choice",
        "parallel_tool_calls", "functions", "function_call", "user", "safety_identifier",
        "metadata", "store", "reasoning_effort", "verbosity", "prompt_cache_key",
        "prompt_cache_retention",
        "n", "service_tier",  # priced / checked below
    }
)  # fmt: skip
MESSAGES_FREE = frozenset(
    {
        "model", "messages", "system", "max_tokens", "stream", "temperature", "top_p", "top_k",
        "stop_sequences", "metadata", "tools", "tool_choice", "thinking", "context_management",
        "output_format", "output_config", "cache_control",  # output_config: effort, format
        "service_tier",  # checked below
    }
)  # fmt: skip
RESPONSES_FREE = frozenset(
    {
        "model", "input", "instructions", "max_output_tokens", "stream", "stream_options",
        "temperature", "top_p", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls",
        "max_tool_calls", "text", "reasoning", "include", "metadata", "user",
        "safety_identifier", "store", "truncation", "prompt_cache_key", "prompt_cache_retention",
        "background", "previous_response_id", "conversation",  # refused by the endpoint
        "service_tier",  # checked below
    }
)  # fmt: skip

# Refused wherever they appear at the top level: no bound is known for what they bill.
_REFUSED = {
    "web_search_options": "web search is billed per call on top of tokens",
    "audio": "audio output is billed at audio prices this gateway does not hold",
    "prediction": "rejected predicted tokens are billed beyond the output cap",
    "prompt": "a stored prompt's size is not known before the call",
    "mcp_servers": "remote MCP tools grow the input within one call without a known bound",
    "container": "code execution containers are billed by the hour",
}
# OpenAI's priority and scale tiers cost more than the list prices the catalog holds; flex
# costs less (billed here at list price). Anthropic's values select capacity, not a price.
_TIERS = frozenset({"auto", "default", "flex", "standard_only"})
# Tools by type. Server tools run at the provider inside one call and grow its input; web
# search is also billed per use. Client tools are only asked for: nothing billed but tokens.
_MESSAGES_TOOLS = {
    "priced": ("web_search_", "web_fetch_"),
    "refused": ("code_execution_", "mcp_toolset"),
    "client": ("bash_", "text_editor_", "computer_", "memory_"),
}
_RESPONSES_TOOLS = {
    "priced": (),
    "refused": ("mcp",),
    # Hosted tools billed per call: the endpoint drops them (`_FEE_TOOLS` there).
    "client": ("local_shell", "shell", "apply_patch", "computer_use_preview", "web_search",
               "file_search", "code_interpreter", "image_generation"),
}  # fmt: skip
DEFAULT_MAX_USES = 5  # a server tool sent without `max_uses` gets this many
MAX_MAX_USES = 20
# Tools whose definition the provider expands into a system prompt of its own: the bytes sent
# do not bound the tokens billed (Anthropic documents up to ~700 per tool, and ~350 for tool use
# at all).
_BUILTIN_TOOL_TOKENS = 1_000
_TOOL_USE_TOKENS = 500
# Content whose billed tokens its bytes do not bound: PDFs (pages become images and text),
# files and documents fetched by reference.
_WHOLE_CONTEXT_BLOCKS = frozenset({"document", "input_file", "file", "container_upload"})
_MAX_DEPTH = 64


@dataclass(slots=True)
class Exposure:
    """What a request's fields add to its worst case beyond its prompt and output cap."""

    choices: int = 1  # answers the output cap is spent on (`n`)
    cache_write: Literal["", "5m", "1h"] = ""  # the dearest cache write it may make
    whole_context: bool = False  # its input may grow to the model's context window
    extra_input_tokens: int = 0  # tokens the provider adds that the body's bytes do not show
    server_uses: int = 0  # server-side searches it may make, each billed per use
    warnings: list[str] = field(default_factory=list)
    # Edits to the client's body before a same-family upstream sees it.
    dropped: list[str] = field(default_factory=list)
    tools: list[Any] | None = None  # the tools to send instead of the client's


def _refuse(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: not accepted by this gateway: {why}.", param=param)


def _check_top_level(
    body: dict[str, Any], free: frozenset[str], unknown: UnknownFields, exposure: Exposure
) -> None:
    for name, value in body.items():
        if name in free or value is None:
            continue
        if name in _REFUSED:
            raise _refuse(name, _REFUSED[name])
        if unknown == "refuse":
            raise _refuse(name, "the gateway does not know what this field costs")
        if unknown == "drop":
            exposure.dropped.append(name)
    if exposure.dropped:
        exposure.warnings.append(f"dropped unknown fields: {', '.join(exposure.dropped)}")
    tier = body.get("service_tier")
    if tier is not None and tier not in _TIERS:
        raise _refuse("service_tier", f"the {tier!r} tier is not priced in the catalog")
    modalities = body.get("modalities")
    if isinstance(modalities, list) and "audio" in modalities:
        raise _refuse("modalities", _REFUSED["audio"])


def _walk(value: Any, depth: int = 0) -> Iterator[dict[str, Any]]:
    """Every object inside `value` (bounded in depth: the body parser bounds it too)."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _walk(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, depth + 1)


# What `_scan_content` looks for, as serialised JSON spells it. Searching the canonical dump
# of the parsed body costs a tenth of walking it (measured on a 300 KB agent body: 0.14 ms
# against 1.2 ms); only a body that names one of them is walked. (Never the client's raw
# bytes: "cache\u005fcontrol" parses to the same key.)
_MARKERS = (b'"cache_control"', *(b'"%s"' % kind.encode() for kind in _WHOLE_CONTEXT_BLOCKS))


def _scan_content(exposure: Exposure, *parts: Any) -> None:
    dumped = orjson.dumps(list(parts))
    if not any(marker in dumped for marker in _MARKERS):
        return
    for node in _walk(list(parts)):
        kind = node.get("type")
        if kind in _WHOLE_CONTEXT_BLOCKS:
            exposure.whole_context = True
        control = node.get("cache_control")
        if isinstance(control, dict):
            exposure.cache_write = "1h" if control.get("ttl") == "1h" else exposure.cache_write
            exposure.cache_write = exposure.cache_write or "5m"


def _max_uses(tool: dict[str, Any], index: int) -> int:
    value = tool.get("max_uses")
    if value is None:
        return DEFAULT_MAX_USES
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_MAX_USES:
        raise InvalidRequest(
            f"tools[{index}].max_uses: must be an integer from 1 to {MAX_MAX_USES}.",
            param=f"tools[{index}].max_uses",
        )
    return value


def _scan_tools(
    exposure: Exposure, tools: Any, kinds: dict[str, tuple[str, ...]], unknown: UnknownFields
) -> None:
    """Function tools are free; server tools are priced and bounded (`max_uses`); those with
    no known bound are refused; unknown types follow `unknown`."""
    if not isinstance(tools, list) or not tools:
        return
    exposure.extra_input_tokens += _TOOL_USE_TOKENS
    kept: list[Any] = []
    for index, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or not isinstance(kind, str) or kind in _FUNCTIONS:
            kept.append(tool)
            continue
        exposure.extra_input_tokens += _BUILTIN_TOOL_TOKENS
        if kind.startswith(kinds["refused"]):
            raise _refuse(f"tools[{index}]", f"{kind} tools are billed without a known bound")
        if kind.startswith(kinds["priced"]):
            uses = _max_uses(tool, index)
            if kind.startswith("web_search"):
                exposure.server_uses += uses
            exposure.whole_context = True
            kept.append({**tool, "max_uses": uses})
        elif kind.startswith(kinds["client"]) or unknown == "pass":
            kept.append(tool)
        elif unknown == "refuse":
            raise _refuse(f"tools[{index}]", f"the gateway does not know what {kind} costs")
        else:
            exposure.warnings.append(f"dropped tools[{index}] of unknown type {kind}")
    if kept != tools:
        exposure.tools = kept


_FUNCTIONS = frozenset({"function", "custom"})


def _positive_int(body: dict[str, Any], name: str, default: int, most: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise InvalidRequest(f"{name}: must be an integer from 1 to {most}.", param=name)
    return value


def chat(body: dict[str, Any], unknown: UnknownFields = "drop") -> Exposure:
    """`/v1/chat/completions` (OpenAI and DeepSeek upstreams get it as sent)."""
    exposure = Exposure(choices=_positive_int(body, "n", 1, 128))
    _check_top_level(body, CHAT_FREE, unknown, exposure)
    _scan_content(exposure, body.get("messages"))
    return exposure


def messages(body: dict[str, Any], unknown: UnknownFields = "drop") -> Exposure:
    """`/v1/messages` (Claude upstreams get it as sent)."""
    exposure = Exposure()
    _check_top_level(body, MESSAGES_FREE, unknown, exposure)
    _scan_content(exposure, body.get("system"), body.get("messages"), body.get("tools"))
    if "cache_control" in body:  # automatic caching: the whole prompt may be written
        exposure.cache_write = exposure.cache_write or "5m"
        _scan_content(exposure, {"cache_control": body["cache_control"]})
    _scan_tools(exposure, body.get("tools"), _MESSAGES_TOOLS, unknown)
    return exposure


def responses(body: dict[str, Any], unknown: UnknownFields = "drop") -> Exposure:
    """`/v1/responses` (OpenAI upstreams get it as sent, less hosted tools)."""
    exposure = Exposure()
    _check_top_level(body, RESPONSES_FREE, unknown, exposure)
    _scan_content(exposure, body.get("input"))
    _scan_tools(exposure, body.get("tools"), _RESPONSES_TOOLS, unknown)
    return exposure


def apply(exposure: Exposure, body: dict[str, Any]) -> dict[str, Any]:
    """The client's body as a same-family upstream gets it: unknown fields dropped, server
    tools bounded."""
    if not exposure.dropped and exposure.tools is None:
        return body
    out = {k: v for k, v in body.items() if k not in exposure.dropped}
    if exposure.tools is not None:
        out["tools"] = exposure.tools
    return out


# Gemini `generateContent` (`api/gateway/dialects/gemini`; the model is in the URL, `model` is
# the gateway's copy of it). Reviewed against https://ai.google.dev/api/generate-content.
GEMINI_FREE = frozenset(
    {
        "model", "contents", "systemInstruction", "toolConfig", "safetySettings", "labels",
        "store",
        "tools", "generationConfig", "serviceTier",  # checked below
    }
)  # fmt: skip
GEMINI_GENERATION_FREE = frozenset(
    {
        "temperature", "topP", "topK", "stopSequences", "seed", "presencePenalty",
        "frequencyPenalty", "responseMimeType", "responseSchema", "responseJsonSchema",
        "_responseJsonSchema", "responseLogprobs", "logprobs", "mediaResolution",
        "enableEnhancedCivicAnswers", "thinkingConfig",
        "maxOutputTokens", "candidateCount", "responseModalities",  # checked below
    }
)  # fmt: skip
_GEMINI_REFUSED = {
    "cachedContent": "a cached content lives in the provider account the gateway shares, and "
    "its size is not known before the call",
    "speechConfig": _REFUSED["audio"],
    "imageConfig": "image output is billed at image prices this gateway does not hold",
}
# Tools Google runs inside the call: billed per use (Search, Maps grounding) or growing the
# input without a bound the body shows (code execution's turns, fetched URLs, file stores).
# Dropped with a warning, as the other families' hosted tools are.
GEMINI_FEE_TOOLS = frozenset(
    {
        "googleSearch", "googleSearchRetrieval", "googleMaps", "codeExecution", "urlContext",
        "fileSearch", "retrieval", "enterpriseWebSearch", "parallelAiSearch", "exaAiSearch",
    }
)  # fmt: skip
_GEMINI_CLIENT_TOOLS = frozenset({"functionDeclarations", "computerUse"})
MAX_CANDIDATES = 8  # Gemini's own bound on candidateCount
_GEMINI_TIERS = frozenset({"unspecified", "standard", "flex"})  # flex is billed at list price
# Files uploaded to the provider account (the Files API): another account user's, never a
# tenant's (the gateway has no Files API).
_PROVIDER_FILES = ("files/", "https://generativelanguage.googleapis.com/")


def gemini(body: dict[str, Any], unknown: UnknownFields = "drop") -> Exposure:
    """Gemini's `generateContent` (Gemini upstreams get it as sent, less what is dropped)."""
    exposure = Exposure()
    generation = body.get("generationConfig")
    if isinstance(generation, dict):
        _gemini_generation(generation, unknown, exposure)
    for name, value in body.items():
        if name in GEMINI_FREE or value is None:
            continue
        if name in _GEMINI_REFUSED:
            raise _refuse(name, _GEMINI_REFUSED[name])
        if unknown == "refuse":
            raise _refuse(name, "the gateway does not know what this field costs")
        if unknown == "drop":
            exposure.dropped.append(name)
    if exposure.dropped:
        exposure.warnings.append(f"dropped unknown fields: {', '.join(exposure.dropped)}")
    tier = body.get("serviceTier")
    if tier is not None and str(tier).lower() not in _GEMINI_TIERS:
        raise _refuse("serviceTier", f"the {tier!r} tier is not priced in the catalog")
    _gemini_files(exposure, body.get("systemInstruction"), body.get("contents"))
    _gemini_tools(exposure, body.get("tools"), unknown)
    return exposure


def _gemini_generation(
    generation: dict[str, Any], unknown: UnknownFields, exposure: Exposure
) -> None:
    for name, value in generation.items():
        param = f"generationConfig.{name}"
        if name in _GEMINI_REFUSED:
            raise _refuse(param, _GEMINI_REFUSED[name])
        if name in GEMINI_GENERATION_FREE or value is None or unknown == "pass":
            continue
        if unknown == "refuse":
            raise _refuse(param, "the gateway does not know what this field costs")
        exposure.dropped.append(param)
    count = generation.get("candidateCount", 1)
    if count is not None and (
        not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_CANDIDATES
    ):
        raise InvalidRequest(
            f"generationConfig.candidateCount: must be an integer from 1 to {MAX_CANDIDATES}.",
            param="generationConfig.candidateCount",
        )
    exposure.choices = count or 1
    modalities = generation.get("responseModalities")
    if isinstance(modalities, list) and any(str(m).upper() != "TEXT" for m in modalities):
        raise _refuse(
            "generationConfig.responseModalities",
            "image and audio output are billed at prices this gateway does not hold",
        )


def _gemini_files(exposure: Exposure, *parts: Any) -> None:
    """Files by URI: refused from the provider account's own store; elsewhere (YouTube, the
    web) their tokens are not bounded by the body, so the input may fill the context window."""
    if b'"fileData"' not in orjson.dumps(list(parts)):
        return
    for node in _walk(list(parts)):
        data = node.get("fileData")
        if not isinstance(data, dict):
            continue
        uri = data.get("fileUri")
        if isinstance(uri, str) and uri.startswith(_PROVIDER_FILES):
            raise _refuse(
                "fileData.fileUri",
                "files uploaded to the provider account are not reachable through this gateway",
            )
        exposure.whole_context = True


def _gemini_tools(exposure: Exposure, tools: Any, unknown: UnknownFields) -> None:
    """Function declarations (and computer use: the client acts) are free; tools Google runs
    are dropped with a warning; MCP servers are refused; other kinds follow `unknown`."""
    if not isinstance(tools, list) or not tools:
        return
    kept: list[Any] = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            kept.append(tool)  # the translator or the upstream names the error
            continue
        out: dict[str, Any] = {}
        for kind, value in tool.items():
            if kind in _GEMINI_CLIENT_TOOLS or (unknown == "pass" and kind not in _GEMINI_SPECIAL):
                out[kind] = value
            elif kind == "mcpServers":
                raise _refuse(f"tools[{index}].mcpServers", _REFUSED["mcp_servers"])
            elif kind in GEMINI_FEE_TOOLS:
                exposure.warnings.append(f"tools[{index}].{kind} dropped: billed per use")
            elif unknown == "refuse":
                raise _refuse(f"tools[{index}].{kind}", "the gateway does not know what it costs")
            else:
                exposure.warnings.append(f"dropped tools[{index}].{kind}: an unknown tool")
        if "functionDeclarations" in out:
            exposure.extra_input_tokens += _TOOL_USE_TOKENS
        if out:
            kept.append(out)
    if kept != tools:
        exposure.tools = kept


_GEMINI_SPECIAL = frozenset({"mcpServers", *GEMINI_FEE_TOOLS})


def apply_gemini(exposure: Exposure, body: dict[str, Any]) -> dict[str, Any]:
    """`apply` for a Gemini body: unknown `generationConfig` fields dropped too, and `tools`
    left out when none is left."""
    out = apply(exposure, body)
    nested = [name.partition(".")[2] for name in exposure.dropped if "." in name]
    generation = out.get("generationConfig")
    if nested and isinstance(generation, dict):
        out = {**out, "generationConfig": {k: v for k, v in generation.items() if k not in nested}}
    if out.get("tools") == []:
        out = {k: v for k, v in out.items() if k not in ("tools", "toolConfig")}
    return out
