"""A thread's history as the model sees it (pure): past turns converted, then trimmed to fit.

Trimming drops whole turns, oldest first, until the estimate fits the model's context window
minus the output cap, the system prompt, the tool definitions and the new message; it never
drops the system prompt or part of a turn (so never half a tool exchange). Counts are o200k
estimates (`api.gateway.tokens`) with a margin for other tokenizers.

Past turns keep their tool exchanges as structured calls and results when this turn declares
every tool they used; otherwise (a provider refuses tool blocks without their definitions) they
are written out as text. Thinking from past turns is dropped: its signatures are only valid for
the provider that made them, and providers ignore old turns' thinking anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from api.gateway.tokens import count_text
from api.gateway.translate import ir
from api.thread import convert
from api.thread.models import ThreadMessage

PER_MESSAGE_TOKENS = 4
IMAGE_TOKENS = 1_600  # the most any provider we price counts for one image
WINDOW_SHARE = 0.9  # leave a tenth of the window for tokenizer differences


def estimate(message: ir.Message) -> int:
    total = PER_MESSAGE_TOKENS
    for part in message.parts:
        if isinstance(part, ir.Text):
            total += count_text(part.text)
        elif isinstance(part, ir.Image):
            total += IMAGE_TOKENS
        elif isinstance(part, ir.ToolCall):
            total += count_text(part.name) + count_text(part.arguments) + PER_MESSAGE_TOKENS
        elif isinstance(part, ir.ToolResult):
            total += count_text(ir.result_text(part)) + PER_MESSAGE_TOKENS
        elif isinstance(part, ir.Thinking):
            total += count_text(part.text)
    return total


def fixed_cost(system: str | None, tools: Sequence[ir.Tool], message: ir.Message) -> int:
    total = count_text(system or "") + estimate(message)
    for tool in tools:
        total += count_text(tool.name) + count_text(tool.description or "")
        total += count_text(orjson.dumps(tool.parameters).decode()) + PER_MESSAGE_TOKENS
    return total


def history_budget(context_window: int, max_output: int, fixed: int) -> int:
    """Tokens left for past turns; negative when the new turn alone does not fit."""
    return int(context_window * WINDOW_SHARE) - max_output - fixed


def _as_text(part: ir.Part) -> ir.Part:
    if isinstance(part, ir.ToolCall):
        return ir.Text(f"[called the tool {part.name} with {part.arguments or '{}'}]")
    if isinstance(part, ir.ToolResult):
        said = "failed" if part.is_error else "returned"
        return ir.Text(
            f"[the tool {part.name or part.tool_call_id} {said}: {ir.result_text(part)}]"
        )
    return part


def past_turn(rows: Sequence[ThreadMessage], declared: set[str]) -> list[ir.Message]:
    messages = [convert.to_ir(row) for row in rows]
    names = {p.name for m in messages for p in m.parts if isinstance(p, ir.ToolCall)}
    structured = names <= declared
    out = []
    for message in messages:
        parts: list[ir.Part] = [p for p in message.parts if not isinstance(p, ir.Thinking)]
        if not structured:
            parts = [_as_text(p) for p in parts]
        if parts:
            out.append(ir.Message(message.role, parts))
    return out


def group_turns(rows: Sequence[ThreadMessage]) -> list[list[ThreadMessage]]:
    turns: list[list[ThreadMessage]] = []
    for row in rows:
        if turns and turns[-1][0].turn_id == row.turn_id:
            turns[-1].append(row)
        else:
            turns.append([row])
    return turns


def trimmed(rows: Sequence[ThreadMessage], declared: set[str], budget: int) -> list[ir.Message]:
    """The newest whole turns that fit in `budget` tokens, in order."""
    kept: list[list[ir.Message]] = []
    used = 0
    for turn in reversed(group_turns(rows)):
        messages = past_turn(turn, declared)
        size = sum(estimate(m) for m in messages)
        if used + size > budget:
            break
        kept.append(messages)
        used += size
    return [message for turn in reversed(kept) for message in turn]
