"""`/v1/tools`: webhook tools a tenant registers with its master key (SPEC §5.5)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from api.deps import AppSettings, DbSession, MasterPrincipal
from api.kit.crypto import SecretBox
from api.kit.ids import parse_id
from api.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, list_body
from api.tool import service as tool_service
from api.tool.models import Tool
from api.tool.schemas import ToolCreate, ToolRead

router = APIRouter(prefix="/v1/tools", tags=["tools"])


async def _secret_box(request: Request) -> SecretBox:
    box: SecretBox = request.state.secret_box
    return box


Box = Annotated[SecretBox, Depends(_secret_box)]


def render(tool: Tool, *, secret: str | None = None) -> ToolRead:
    return ToolRead(
        id=str(tool.id),
        name=tool.name,
        description=tool.description,
        input_schema=tool.input_schema,
        webhook_url=tool.webhook_url,
        timeout_ms=tool.timeout_ms,
        signing_secret=secret,
        created_at=tool.created_at,
        updated_at=tool.updated_at,
    )


@router.post("", status_code=201, response_model=ToolRead, response_model_exclude_none=True)
async def create_tool(
    data: ToolCreate,
    session: DbSession,
    principal: MasterPrincipal,
    box: Box,
    settings: AppSettings,
) -> ToolRead:
    tool, secret = await tool_service.create_tool(
        session, box, principal, data, allow_private_webhooks=settings.allow_private_webhooks
    )
    return render(tool, secret=secret)


@router.get("")
async def list_tools(
    session: DbSession,
    principal: MasterPrincipal,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    cursor: str | None = Query(None, max_length=512),
) -> dict[str, Any]:
    page = await tool_service.list_tools(session, principal, limit=limit, cursor=cursor)
    data = [render(tool).model_dump(mode="json", exclude_none=True) for tool in page.items]
    return list_body(data, page)


@router.get("/{tool_id}", response_model=ToolRead, response_model_exclude_none=True)
async def get_tool(tool_id: str, session: DbSession, principal: MasterPrincipal) -> ToolRead:
    return render(await tool_service.get_tool(session, principal, parse_id(tool_id, "tool")))


@router.delete("/{tool_id}")
async def delete_tool(
    tool_id: str, session: DbSession, principal: MasterPrincipal
) -> dict[str, Any]:
    tool = await tool_service.delete_tool(session, principal, parse_id(tool_id, "tool"))
    return {"object": "tool.deleted", "id": str(tool.id), "deleted": True}


@router.post("/{tool_id}/rotate-secret", response_model=ToolRead, response_model_exclude_none=True)
async def rotate_tool_secret(
    tool_id: str, session: DbSession, principal: MasterPrincipal, box: Box
) -> ToolRead:
    tool, secret = await tool_service.rotate_secret(
        session, box, principal, parse_id(tool_id, "tool")
    )
    return render(tool, secret=secret)
