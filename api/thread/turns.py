"""A thread turn (SPEC §5.4): the new user message in, the assistant's answer out.

Under the thread's lock (so concurrent turns run one after the other, each on the history the
previous one left): replay a turn already answered under the same `Idempotency-Key` (or refuse
it with a 400 when the key came with another request body, Stripe's contract); load and
trim the history; call the model through the proxy pipeline (`api.gateway.internal`: access
control, caps, metering, one usage event per call); while it calls registered tools, run them
through the job queue (`api.tool.runner`, concurrently within a round) and call it again, up to
`max_tool_rounds` and while the key is still active (revoked or suspended meanwhile: the error
a new request would get); then persist the user message, every assistant and tool message and the
answer in one transaction. A failed model call persists nothing (its usage event records it).

Streams carry each model call as Anthropic events (message_start … message_stop), a
`thread.tool_result` event per tool result between rounds, and a final
`thread.message.completed` event with the stored answer.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import service as auth_service
from api.auth.service import Principal
from api.db import after_commit, session_scope
from api.errors import AppError, InvalidRequest, NotFound, anthropic_body
from api.gateway import internal
from api.gateway.catalog import ModelEntry
from api.gateway.pipeline import Gateway, record_refusal
from api.gateway.translate import anthropic_stream, ir
from api.gateway.translate.fields import json_object, sse
from api.kit.jobs import JobQueue
from api.kit.locks import Locks
from api.kit.time import utcnow
from api.thread import convert, history
from api.thread import service as thread_service
from api.thread.models import ThreadMessage
from api.thread.repository import MessageRepository, ThreadRepository
from api.thread.schemas import MessageCreate, MessageRead
from api.tool import runner
from api.tool import service as tool_service
from api.tool.models import Tool

logger = logging.getLogger("tollgate.threads")

ENDPOINT = "/v1/threads/messages"  # the usage log's and the metrics' label for turn calls
DEFAULT_MAX_OUTPUT_TOKENS = 4096
LOCK_TTL_SECONDS = 1800.0
LOCK_WAIT_SECONDS = 600.0


@dataclass(slots=True)
class TurnContext:
    """The collaborators of a turn, built once in the lifespan."""

    gateway: Gateway
    sessionmaker: async_sessionmaker[AsyncSession]
    jobs: JobQueue
    locks: Locks
    # Called with the turn's id once its messages are committed: search indexes them.
    on_persisted: Callable[[uuid.UUID], Awaitable[None]] | None = None


@dataclass(slots=True)
class Turn:
    principal: Principal
    thread_id: uuid.UUID
    data: MessageCreate
    idempotency_key: str | None
    request_id: str
    request_hash: str
    system: str | None
    tools: list[Tool]
    entry: ModelEntry
    max_output: int
    user_blocks: list[dict[str, Any]]
    turn_id: uuid.UUID = field(default_factory=uuid.uuid4)
    history: list[ir.Message] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    failed: bool = False
    streamed: bool = False  # a byte has gone out: later failures are events, not responses

    @property
    def declared(self) -> list[ir.Tool]:
        return [ir.Tool(t.name, t.description or None, t.input_schema) for t in self.tools]

    def add(
        self, role: str, content: list[dict[str, Any]], done: internal.Completion | None = None
    ) -> None:
        row: dict[str, Any] = {"role": role, "content": content}
        if done is not None:
            usage = done.response.usage
            row.update(
                model=done.model, provider=done.provider, stop_reason=done.response.stop_reason,
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                cost_micros=done.cost_micros,
            )  # fmt: skip
        self.pending.append(row)


async def prepare(
    ctx: TurnContext,
    principal: Principal,
    thread_id: uuid.UUID,
    data: MessageCreate,
    *,
    idempotency_key: str | None,
    request_id: str,
) -> Turn:
    """Everything checked before the lock: the thread is visible, the tools exist, the model
    is known and the new message fits its window."""
    user_blocks = convert.user_content(data.content)
    async with session_scope(ctx.sessionmaker) as session:
        thread = await thread_service.get_thread(session, principal, thread_id)
        tools = await tool_service.resolve(session, principal.tenant_id, data.tools or [])
    gateway = ctx.gateway
    try:
        entry = gateway.catalog.resolve(data.model).entry
    except AppError as error:
        record_refusal(gateway, principal, request_id, ENDPOINT, data.model[:200], "", error)
        raise
    max_output = data.max_tokens or min(entry.max_output_tokens, DEFAULT_MAX_OUTPUT_TOKENS)
    return Turn(
        principal=principal, thread_id=thread.id, data=data, idempotency_key=idempotency_key,
        request_id=request_id, request_hash=request_hash(data), system=thread.system,
        tools=tools, entry=entry, max_output=max_output, user_blocks=user_blocks,
    )  # fmt: skip


def request_hash(data: MessageCreate) -> str:
    """sha256 of the validated request, as canonical JSON: every field of `MessageCreate`
    (defaults filled in, so an omitted field and its default are the same request), keys
    sorted, no whitespace. So a retry that differs only in JSON spacing or key order is the
    same request; one that differs in anything the turn depends on (model, content, max_tokens,
    temperature, tools, max_tool_rounds, stream) is another."""
    canonical = orjson.dumps(data.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def _lock_name(turn: Turn) -> str:
    return f"thread:{turn.thread_id}"


async def _load(ctx: TurnContext, turn: Turn) -> MessageRead | None:
    """Under the lock: the stored answer of a replayed turn, or else the trimmed history."""
    principal = turn.principal
    async with session_scope(ctx.sessionmaker) as session:
        await thread_service.get_thread(session, principal, turn.thread_id)  # not deleted since
        messages = MessageRepository(session, principal.tenant_id)
        if turn.idempotency_key is not None:
            done = await messages.turn_for_key(turn.thread_id, turn.idempotency_key)
            if done:
                _check_same_request(turn, done)
                return _answer(done)
        rows = await messages.history(turn.thread_id)
    user = convert.blocks_to_ir("user", turn.user_blocks)
    fixed = history.fixed_cost(turn.system, turn.declared, user)
    budget = history.history_budget(turn.entry.context_window, turn.max_output, fixed)
    if budget < 0:
        raise InvalidRequest(
            f"content: the message and max_tokens ({turn.max_output}) do not fit the context "
            f"window of {turn.entry.id} ({turn.entry.context_window} tokens).",
            param="content",
        )
    turn.history = history.trimmed(rows, {t.name for t in turn.tools}, budget)
    return None


def _check_same_request(turn: Turn, rows: list[ThreadMessage]) -> None:
    """A stored turn is replayed only to the request that made it: the same key with another
    body is a 400. Rows from before `request_hash` existed (NULL) are replayed as they were."""
    keyed = next((row for row in rows if row.idempotency_key == turn.idempotency_key), rows[0])
    if keyed.request_hash is not None and keyed.request_hash != turn.request_hash:
        raise InvalidRequest(
            "This Idempotency-Key was already used with a different request body.",
            param="Idempotency-Key",
        )


def _answer(rows: list[ThreadMessage]) -> MessageRead:
    final = next(row for row in reversed(rows) if row.role == "assistant")
    return thread_service.render_message(final, turn=rows)


async def send(ctx: TurnContext, turn: Turn) -> MessageRead:
    async with ctx.locks.hold(
        _lock_name(turn), ttl_seconds=LOCK_TTL_SECONDS, wait_seconds=LOCK_WAIT_SECONDS
    ):
        replay = await _load(ctx, turn)
        if replay is not None:
            return replay
        async for _ in _run(ctx, turn, streaming=False):
            pass
        return await _persist(ctx, turn)


async def stream(ctx: TurnContext, turn: Turn) -> AsyncGenerator[bytes, None]:
    async with ctx.locks.hold(
        _lock_name(turn), ttl_seconds=LOCK_TTL_SECONDS, wait_seconds=LOCK_WAIT_SECONDS
    ):
        replay = await _load(ctx, turn)
        if replay is None:
            async for chunk in _run(ctx, turn, streaming=True):
                yield chunk
            if turn.failed:
                return
            replay = await _persist(ctx, turn)
        completed = {"type": "thread.message.completed", "message": replay.model_dump(mode="json")}
        yield sse(completed, "thread.message.completed")


async def _call_model(
    ctx: TurnContext, turn: Turn, request: ir.ChatRequest, streaming: bool, *, recheck: bool
) -> AsyncIterator[bytes | internal.Completion]:
    principal, request_id = turn.principal, turn.request_id
    result = internal.StreamResult()
    encoder = anthropic_stream.StreamEncoder()
    try:
        if recheck:
            await _recheck_key(ctx, turn)
        if not streaming:
            yield await internal.complete(ctx.gateway, principal, request_id, ENDPOINT, request)
            return
        async for event in internal.stream(
            ctx.gateway, principal, request_id, ENDPOINT, request, result
        ):
            yield encoder.feed(event)
    except AppError as error:  # refused before a later round's call: a cap, the key's status
        if not turn.streamed:
            raise
        yield sse(anthropic_body(error), "error")
    if result.completion is not None:
        yield result.completion


async def _recheck_key(ctx: TurnContext, turn: Turn) -> None:
    """Tools can run for minutes: a key revoked, expired or suspended meanwhile gets no further
    model call, and the error a new request with it would get (401 or 402)."""
    async with session_scope(ctx.sessionmaker) as session:
        await auth_service.recheck(session, turn.principal)


async def _run(ctx: TurnContext, turn: Turn, *, streaming: bool) -> AsyncIterator[bytes]:
    messages = [*turn.history, convert.blocks_to_ir("user", turn.user_blocks)]
    turn.add("user", turn.user_blocks)
    tools = {tool.name: tool for tool in turn.tools}
    declared = turn.declared
    rounds, closing = 0, False
    while True:
        request = ir.ChatRequest(
            model=turn.data.model, messages=list(messages),
            system=[turn.system] if turn.system else [], tools=declared,
            tool_choice=ir.ToolChoice("none") if closing and declared else None,
            max_output_tokens=turn.max_output, temperature=turn.data.temperature,
        )  # fmt: skip
        done: internal.Completion | None = None
        async for item in _call_model(ctx, turn, request, streaming, recheck=rounds > 0):
            if isinstance(item, bytes):
                turn.streamed = True
                yield item
            else:
                done = item
        if done is None:  # the error event has been sent; nothing is persisted
            turn.failed = True
            return
        response = done.response
        turn.add("assistant", convert.from_ir(response.parts), done)
        messages.append(ir.Message("assistant", list(response.parts)))
        calls = [part for part in response.parts if isinstance(part, ir.ToolCall)]
        if not calls:
            return
        rounds += 1
        if closing or rounds > turn.data.max_tool_rounds:
            results = [
                _refused(call, "The turn reached its limit of tool rounds.") for call in calls
            ]
        else:
            results = list(
                await asyncio.gather(
                    *(_call_tool(ctx, turn, call, tools.get(call.name), rounds) for call in calls)
                )
            )
        turn.add("tool", results)
        messages.append(convert.blocks_to_ir("user", results))
        if streaming:
            for block in results:
                yield sse({**block, "type": "thread.tool_result"}, "thread.tool_result")
        if closing:
            return  # the model ignored tool_choice "none": the turn ends on the error results
        closing = rounds >= turn.data.max_tool_rounds


def _refused(call: ir.ToolCall, why: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call.id, "name": call.name, "content": why,
            "is_error": True, "attempts": 0, "latency_ms": 0}  # fmt: skip


async def _call_tool(
    ctx: TurnContext, turn: Turn, call: ir.ToolCall, tool: Tool | None, round_no: int
) -> dict[str, Any]:
    """One tool call through the job queue; whatever goes wrong becomes an error result."""
    if tool is None:
        return _refused(call, f"No tool named {call.name!r} is available in this turn.")
    try:
        arguments = json_object(call.arguments, "input")
    except AppError:
        return _refused(call, "The tool call's input is not a JSON object.")
    principal = turn.principal
    payload = {
        "tool_call_id": call.id, "input": arguments, "thread_id": str(turn.thread_id),
        "key_id": str(principal.key_id), "tenant_id": str(principal.tenant_id),
    }  # fmt: skip
    # A retried turn (same Idempotency-Key) reuses the result of a call it already made.
    scope = turn.idempotency_key or str(turn.turn_id)
    job_id = (
        "tool:"
        + hashlib.sha256(f"{turn.thread_id}:{scope}:{round_no}:{call.id}".encode()).hexdigest()[:40]
    )
    started = time.perf_counter()
    try:
        result = await ctx.jobs.run(
            runner.JOB_NAME, str(tool.id), payload, job_id=job_id,
            timeout_seconds=runner.await_bound_seconds(tool.timeout_ms),
        )  # fmt: skip
    except TimeoutError:
        result = {"content": "The tool call did not finish in time.", "is_error": True}
    except Exception:
        logger.exception("tool call %s of thread %s failed in the queue", call.id, turn.thread_id)
        result = {"content": "The tool call failed.", "is_error": True}
    return {
        "type": "tool_result", "tool_use_id": call.id, "name": call.name,
        "content": str(result.get("content", "")), "is_error": bool(result.get("is_error")),
        "attempts": int(result.get("attempts", 0)),
        "latency_ms": int(result.get("latency_ms", (time.perf_counter() - started) * 1000)),
    }  # fmt: skip


async def _persist(ctx: TurnContext, turn: Turn) -> MessageRead:
    """Every message of the turn in one transaction, numbered under the thread row's lock."""
    principal = turn.principal
    async with session_scope(ctx.sessionmaker) as session:
        owner = None if principal.is_master else principal.key_id
        thread = await ThreadRepository(session, principal.tenant_id, owner).lock(turn.thread_id)
        if thread is None:
            raise NotFound(f"No thread with id {turn.thread_id}.", param="id")
        now = utcnow()
        rows = []
        for index, pending in enumerate(turn.pending):
            rows.append(
                ThreadMessage(
                    id=turn.turn_id if index == 0 else uuid.uuid4(),
                    tenant_id=principal.tenant_id, thread_id=thread.id,
                    seq=thread.message_count + index, turn_id=turn.turn_id,
                    request_id=turn.request_id, created_at=now,
                    idempotency_key=turn.idempotency_key if index == 0 else None,
                    request_hash=turn.request_hash if index == 0 and turn.idempotency_key else None,
                    **pending,
                )
            )  # fmt: skip
        session.add_all(rows)
        thread.message_count += len(rows)
        thread.updated_at = now
        await session.flush()
        if ctx.on_persisted is not None:
            after_commit(session, functools.partial(ctx.on_persisted, turn.turn_id))
    return _answer(rows)
