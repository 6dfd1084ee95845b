"""Threads: the tenant's conversations, newest first, and one thread's transcript (read-only).

A transcript shows every stored block as people read it: text, the model's tool calls with
their arguments, the tools' results (and whether they failed), thinking, and images by what they
are (never loaded: an image's URL is another site, which the page's policy does not fetch).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.auth.repository import ApiKeyRepository
from api.dashboard.forms import Cursor, page_limit, pretty
from api.dashboard.render import DashboardRoute, page
from api.dashboard.session import SignedIn
from api.deps import DbSession
from api.kit.ids import parse_id
from api.kit.pagination import MAX_LIMIT
from api.thread import service as thread_service
from api.thread.convert import result_text

router = APIRouter(prefix="/threads", route_class=DashboardRoute)


def block_view(block: dict[str, Any]) -> dict[str, Any]:
    """One stored block (see api/thread/convert.py) as the transcript template shows it."""
    kind = block.get("type")
    if kind == "text":
        return {"kind": "text", "text": str(block.get("text", ""))}
    if kind == "tool_use":
        return {"kind": "tool_use", "name": block.get("name"), "id": block.get("id"),
                "input": pretty(block.get("input") or {})}  # fmt: skip
    if kind == "tool_result":
        return {
            "kind": "tool_result", "name": block.get("name"), "id": block.get("tool_use_id"),
            "text": result_text(block.get("content")), "is_error": bool(block.get("is_error")),
            "attempts": block.get("attempts"), "latency_ms": block.get("latency_ms"),
        }  # fmt: skip
    if kind == "thinking":
        return {"kind": "thinking", "text": str(block.get("thinking", ""))}
    if kind == "redacted_thinking":
        return {"kind": "redacted_thinking"}
    if kind == "image":
        return {"kind": "image", "text": _image_text(block.get("source"))}
    return {"kind": "other", "text": pretty(block)}


def _image_text(source: Any) -> str:
    """What an image is, not the image: its URL, or its type and size."""
    if not isinstance(source, dict):
        return "Image"
    if source.get("type") == "url":
        return f"Image at {source.get('url')}"
    size = len(str(source.get("data") or "")) * 3 // 4  # base64: four characters, three bytes
    return f"Image ({source.get('media_type')}, about {size:,} bytes)"


@router.get("")
async def list_threads(
    request: Request,
    session: DbSession,
    signed: SignedIn,
    cursor: Cursor = None,
    limit: str | None = None,
) -> Response:
    principal = signed.principal
    size = page_limit(limit)
    listed = await thread_service.list_threads(
        session, principal, key_id=None, limit=size, cursor=cursor
    )
    owners = await ApiKeyRepository(session, principal.tenant_id).by_ids(
        list({thread.key_id for thread in listed.items})
    )
    names = {key.id: key.name for key in owners}
    return page(
        request, signed, "threads.html", threads=listed.items, page_of=listed, names=names,
        limit=size, nav="threads",
    )  # fmt: skip


@router.get("/{thread_id}")
async def show_thread(
    request: Request,
    thread_id: str,
    session: DbSession,
    signed: SignedIn,
    cursor: Cursor = None,
) -> Response:
    """The transcript, oldest message first, a hundred messages a page."""
    principal = signed.principal
    thread = await thread_service.get_thread(session, principal, parse_id(thread_id, "thread"))
    messages = await thread_service.list_messages(
        session, principal, thread.id, limit=MAX_LIMIT, cursor=cursor, order="asc"
    )
    owner = await ApiKeyRepository(session, principal.tenant_id).by_ids([thread.key_id])
    turns = [
        {"message": thread_service.render_message(message),
         "blocks": [block_view(block) for block in message.content]}
        for message in messages.items
    ]  # fmt: skip
    return page(
        request, signed, "thread.html", thread=thread, turns=turns, page_of=messages,
        key_name=owner[0].name if owner else None, metadata=pretty(thread.metadata_),
        nav="threads",
    )  # fmt: skip
