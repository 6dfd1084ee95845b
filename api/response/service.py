"""Stored responses (OpenAI Responses' `store`, `previous_response_id`, `item_reference`).

`resolve` runs before a Responses request is checked, reserved and sent: it replaces
`previous_response_id` with the stored conversation it names (every earlier response's input
and output items, oldest first) and each `item_reference` input with the stored item, so that
the reservation counts the whole history and every provider, OpenAI included (which is sent
`store: false`), gets the items themselves. `remember` stores the response once it is made,
unless the request said `store: false`. Instructions are not carried over, as at OpenAI.
"""

from __future__ import annotations

import secrets
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.service import Principal
from api.errors import InvalidRequest, NotFound
from api.kit import nul
from api.kit.time import utcnow
from api.response import conversations
from api.response.models import StoredResponse
from api.response.repository import ResponseRepository

MAX_CHAIN = 1000  # responses followed back through previous_response_id
# Set by the job that makes a background response: the id its client was given at submit.
BACKGROUND_ID: ContextVar[str | None] = ContextVar("background_response_id", default=None)


@dataclass(slots=True)
class Storing:
    """What a request adds to the store once it is answered."""

    store: bool
    previous_response_id: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    conversation_id: str | None = None  # the conversation the items are added to

    @property
    def keeps(self) -> bool:
        return self.store or self.conversation_id is not None


def repository(session: AsyncSession, principal: Principal) -> ResponseRepository:
    owner = None if principal.is_master else principal.key_id
    return ResponseRepository(session, principal.tenant_id, owner)


def _as_items(given: Any) -> list[Any]:
    if isinstance(given, str):
        return [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": given}]}]  # fmt: skip
    return list(given) if isinstance(given, list) else []


def forwarded(item: dict[str, Any]) -> dict[str, Any]:
    """A stored item as it is sent upstream: ids only where the API needs them (reasoning
    items, replayed with their `encrypted_content`); Tollgate's own ids mean nothing there."""
    if item.get("type") == "reasoning":
        return item
    return {k: v for k, v in item.items() if k not in ("id", "status")}


async def resolve(
    session: AsyncSession, principal: Principal, body: dict[str, Any]
) -> tuple[dict[str, Any], Storing]:
    """`body` with its stored history and references resolved (see the module docstring)."""
    store = body.get("store", True) is not False
    if store:  # what is stored must fit PostgreSQL's jsonb
        nul.check_value(body.get("input"), "input")
        nul.check_value(body.get("metadata"), "metadata")
    previous = body.get("previous_response_id")
    conversation = body.get("conversation")
    given = body.get("input")
    references = isinstance(given, list) and any(
        isinstance(i, dict) and i.get("type") == "item_reference" for i in given
    )
    if previous is None and conversation is None and not references:
        items = _as_items(given)
        plain = [i for i in items if isinstance(i, dict)]
        return body, Storing(
            store, None, [conversations.with_id(i) for i in plain] if store else []
        )
    scope = repository(session, principal)
    history: list[dict[str, Any]] = []
    conversation_id = None
    if previous is not None and conversation is not None:
        raise InvalidRequest(
            "conversation: give a conversation or a previous_response_id, not both.",
            param="conversation",
        )
    if previous is not None:
        if not isinstance(previous, str) or not previous:
            raise InvalidRequest(
                "previous_response_id: must be a response id.", param="previous_response_id"
            )
        history = await _conversation(scope, previous)
    if conversation is not None:
        conversation_id = conversations.conversation_id_of(conversation)
        held = await conversations.get(session, principal, conversation_id, param="conversation")
        rows = await conversations.repository(session, principal).items(held)
        history = [row.item for row in rows]
    inputs: list[dict[str, Any]] = []
    for i, item in enumerate(_as_items(given)):
        if isinstance(item, dict) and item.get("type") == "item_reference":
            item_id = item.get("id")
            stored = await _item(session, principal, item_id)
            if stored is None:
                raise NotFound(f"No stored item with id {item_id!r}.", param=f"input[{i}].id")
            inputs.append(stored)
        elif isinstance(item, dict):
            inputs.append(conversations.with_id(item))
        else:
            inputs.append(item)  # not an item: the request check names it
    resolved = {k: v for k, v in body.items() if k not in ("previous_response_id", "conversation")}
    resolved["input"] = [forwarded(i) if isinstance(i, dict) else i for i in history + inputs]
    return resolved, Storing(store, previous, inputs, conversation_id)


async def _item(session: AsyncSession, principal: Principal, item_id: Any) -> dict[str, Any] | None:
    """A stored response's item, else a conversation's, of this scope."""
    if not isinstance(item_id, str) or not item_id:
        return None
    found = await repository(session, principal).item(item_id)
    if found is not None:
        return found.item
    held = await conversations.repository(session, principal).item_by_id(item_id)
    return held.item if held is not None else None


async def _conversation(scope: ResponseRepository, response_id: str) -> list[dict[str, Any]]:
    chain: list[StoredResponse] = []
    next_id: str | None = response_id
    while next_id is not None:
        found = await scope.by_response_id(next_id)
        if found is None:
            if not chain:
                raise NotFound(
                    f"No response with id {response_id!r}.", param="previous_response_id"
                )
            break  # an earlier response expired or was deleted: the history starts after it
        chain.append(found)
        if len(chain) >= MAX_CHAIN:
            raise InvalidRequest(
                f"previous_response_id: the conversation is longer than {MAX_CHAIN} responses.",
                param="previous_response_id",
            )
        next_id = found.previous_response_id
    items: list[dict[str, Any]] = []
    for stored in reversed(chain):
        items += [row.item for row in await scope.items(stored)]
    return items


async def remember(
    session: AsyncSession,
    principal: Principal,
    storing: Storing,
    payload: dict[str, Any],
    *,
    retention_days: int,
) -> None:
    """Store `payload` (the response object the client got) with its items, and add them to
    the request's conversation (whatever `store` said, as at OpenAI)."""
    response_id = payload.get("id")
    output = payload.get("output")
    outputs = (
        [conversations.with_id(o) for o in output if isinstance(o, dict)]
        if isinstance(output, list)
        else []
    )
    if storing.conversation_id is not None:
        try:
            conversation = await conversations.get(
                session, principal, storing.conversation_id, lock=True
            )
        except NotFound:  # deleted while the response was made: nothing to add to
            pass
        else:
            held_items = conversations.repository(session, principal)
            held_items.append(conversation, [*storing.inputs, *outputs])
            await session.flush()
    if (background := BACKGROUND_ID.get()) is not None:
        payload, response_id = {**payload, "id": background, "background": True}, background
    if not storing.store or not isinstance(response_id, str) or not response_id:
        return
    scope = repository(session, principal)
    if background is not None and (held := await scope.by_response_id(background)) is not None:
        held.body, held.model = payload, str(payload.get("model") or "")[:200]
        await scope.add_items(held, storing.inputs, outputs)
        return
    now = utcnow()
    stored = StoredResponse(
        id=uuid.uuid4(), tenant_id=principal.tenant_id, key_id=principal.key_id,
        response_id=response_id[:128], previous_response_id=storing.previous_response_id,
        model=str(payload.get("model") or "")[:200], body=payload, created_at=now,
        expires_at=now + timedelta(days=retention_days),
    )  # fmt: skip
    await scope.add(stored, storing.inputs, outputs)


def new_id() -> str:
    return f"resp_{secrets.token_hex(24)}"


async def hold_background(
    session: AsyncSession, principal: Principal, response_id: str, body: dict[str, Any]
    , *, retention_days: int,
) -> dict[str, Any]:  # fmt: skip
    """The stored response a background request's client polls until its job has made it."""
    now = utcnow()
    shown: dict[str, Any] = {
        "id": response_id, "object": "response", "created_at": int(now.timestamp()),
        "status": "queued", "background": True, "model": body.get("model"), "output": [],
        "error": None, "incomplete_details": None, "usage": None,
        "previous_response_id": body.get("previous_response_id"),
        "metadata": body.get("metadata") or {}, "store": True,
    }  # fmt: skip
    stored = StoredResponse(
        id=uuid.uuid4(), tenant_id=principal.tenant_id, key_id=principal.key_id,
        response_id=response_id, previous_response_id=None,
        model=str(body.get("model") or "")[:200], body=shown, created_at=now,
        expires_at=now + timedelta(days=retention_days),
    )  # fmt: skip
    await repository(session, principal).add(stored, [], [])
    return shown


async def background_failed(
    session: AsyncSession, principal: Principal, response_id: str, error: dict[str, Any]
) -> None:
    """The job behind a background response failed: the response says so, with the error."""
    held = await repository(session, principal).by_response_id(response_id)
    if held is not None and held.body.get("status") == "queued":
        inner = error.get("error")
        detail: dict[str, Any] = inner if isinstance(inner, dict) else error
        held.body = {**held.body, "status": "failed", "error": {
            "code": detail.get("code") or "server_error", "message": detail.get("message", ""),
        }}  # fmt: skip


async def get(session: AsyncSession, principal: Principal, response_id: str) -> StoredResponse:
    found = await repository(session, principal).by_response_id(response_id)
    if found is None:
        raise NotFound(f"No response with id {response_id!r}.", param="response_id")
    return found
