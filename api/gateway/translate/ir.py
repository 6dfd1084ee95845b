"""The internal representation every dialect is parsed into and rendered from.

It has a place for everything the richest dialect carries: ordered content parts (text, images,
tool calls, tool results, thinking with its signature), a normalised stop reason and normalised
`Usage` (input ⊇ cached and cache writes, output ⊇ reasoning). Stream events are block-based
like Anthropic's: every content block is opened, fed deltas and closed, in order.

Stop reasons (normalised vocabulary, INDEX.md table):
    end_turn · stop_sequence · max_tokens · tool_use · content_filter · pause · error · other
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from api.errors import AppError, RateLimited, UpstreamTimeout, UpstreamUnavailable
from api.gateway.pricing import Usage

Role = Literal["user", "assistant"]
BlockKind = Literal["text", "thinking", "tool_call"]
StopReason = Literal[
    "end_turn",
    "stop_sequence",
    "max_tokens",
    "tool_use",
    "content_filter",
    "pause",
    "error",
    "other",
]


@dataclass(slots=True)
class Text:
    text: str


@dataclass(slots=True)
class Image:
    """Either inline (`data` is base64, with `media_type`) or by `url` (http(s))."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object as a string (OpenAI's convention)
    signature: str | None = None  # Gemini's thoughtSignature on a functionCall part


@dataclass(slots=True)
class ToolResult:
    tool_call_id: str
    content: list[Text | Image]
    is_error: bool = False
    name: str | None = None  # Gemini needs the function's name; filled from the call when known


@dataclass(slots=True)
class Thinking:
    text: str
    signature: str | None = None
    redacted: str | None = None  # Anthropic redacted_thinking `data`


Part = Text | Image | ToolCall | ToolResult | Thinking


@dataclass(slots=True)
class Message:
    role: Role
    parts: list[Part]


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None
    parameters: dict[str, Any]
    strict: bool | None = None


@dataclass(slots=True)
class ToolChoice:
    mode: Literal["auto", "required", "none", "tool"]
    name: str | None = None  # with mode "tool"


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    system: list[str] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    thinking_budget: int | None = None  # tokens; Anthropic budget_tokens, Gemini thinkingBudget
    reasoning_effort: str | None = None  # OpenAI's low / medium / high
    # Structured output: {"type": "json_object"} or {"type": "json_schema", "name", "schema",
    # "strict"?} (the Responses API's `text.format` shape; chat nests it under `json_schema`).
    output_format: dict[str, Any] | None = None
    # Fields this IR has no place for, forwarded only to an upstream of the `source` family.
    extras: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the family the request was parsed from
    # What was dropped on the way (for the X-Tollgate-Warning header).
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ChatResponse:
    id: str
    model: str
    parts: list[Part]
    stop_reason: StopReason
    usage: Usage
    stop_sequence: str | None = None
    created: int = 0  # Unix seconds; translators take no clock, the caller may set it


# Stream events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageStart:
    id: str
    model: str
    usage: Usage | None = None  # what is known at the start (Anthropic: the input)


@dataclass(frozen=True, slots=True)
class BlockStart:
    index: int
    kind: BlockKind
    id: str = ""  # tool calls
    name: str = ""
    signature: str | None = None  # a tool call's Gemini thoughtSignature


@dataclass(frozen=True, slots=True)
class TextDelta:
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    index: int
    text: str = ""
    signature: str = ""


@dataclass(frozen=True, slots=True)
class ToolArgsDelta:
    index: int
    arguments: str


@dataclass(frozen=True, slots=True)
class BlockStop:
    index: int


@dataclass(frozen=True, slots=True)
class MessageEnd:
    stop_reason: StopReason
    usage: Usage
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class StreamError:
    """An error inside an open stream; `kind` is one of ERROR_KINDS."""

    kind: str
    message: str
    # The gateway's own error it stands for, for a family that renders it exactly (chat).
    error: AppError | None = field(default=None, compare=False)

    @classmethod
    def from_app_error(cls, error: AppError) -> StreamError:
        kinds: dict[type[AppError], str] = {
            RateLimited: "rate_limit",
            UpstreamUnavailable: "overloaded",
            UpstreamTimeout: "timeout",
        }
        return cls(kinds.get(type(error), "api_error"), error.message, error)


StreamEvent = (
    MessageStart
    | BlockStart
    | TextDelta
    | ThinkingDelta
    | ToolArgsDelta
    | BlockStop
    | MessageEnd
    | StreamError
)

# kind → (Anthropic error type, OpenAI error type / Responses code)
ERROR_KINDS: dict[str, tuple[str, str]] = {
    "overloaded": ("overloaded_error", "server_error"),
    "rate_limit": ("rate_limit_error", "rate_limit_error"),
    "timeout": ("timeout_error", "timeout_error"),
    "invalid_request": ("invalid_request_error", "invalid_request_error"),
    "api_error": ("api_error", "server_error"),
}


def warn(request: ChatRequest, what: str) -> None:
    """Record something the target family has no place for (X-Tollgate-Warning)."""
    if what not in request.warnings:
        request.warnings.append(what)


def merge_turns(messages: list[Message]) -> list[Message]:
    """Consecutive turns of the same role as one (Anthropic and Gemini want alternation).

    Tool results go first in a merged user turn, as Anthropic requires.
    """
    out: list[Message] = []
    for message in messages:
        if out and out[-1].role == message.role:
            out[-1] = Message(message.role, [*out[-1].parts, *message.parts])
        else:
            out.append(Message(message.role, list(message.parts)))
    for message in out:
        if message.role == "user" and any(isinstance(p, ToolResult) for p in message.parts):
            results = [p for p in message.parts if isinstance(p, ToolResult)]
            message.parts = [*results, *(p for p in message.parts if not isinstance(p, ToolResult))]
    return out


def tool_names(messages: list[Message]) -> dict[str, str]:
    """Call id → function name, from the assistant turns (Gemini answers by name, not id)."""
    return {
        part.id: part.name
        for message in messages
        for part in message.parts
        if isinstance(part, ToolCall)
    }


def result_text(result: ToolResult) -> str:
    return "".join(p.text for p in result.content if isinstance(p, Text))
