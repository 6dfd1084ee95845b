"""Webhook tools: register (schema checked, URL checked against SSRF), list, delete, rotate the
signing secret. The secret is shown once and kept sealed: the worker signs each call with it."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # the package ships no type information
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.service import Principal
from api.errors import Conflict, InvalidRequest, NotFound
from api.kit.crypto import SecretBox
from api.kit.pagination import Page
from api.kit.webhooks import check_url
from api.tool.models import Tool
from api.tool.repository import ToolRepository
from api.tool.schemas import ToolCreate
from api.tool.validation import outside_reference

MAX_SCHEMA_BYTES = 64 * 1024


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def check_input_schema(schema: dict[str, Any]) -> None:
    """A valid JSON Schema (its own metaschema's rules) describing an object, as providers need,
    that refers to nothing outside itself."""
    if schema.get("type") != "object":
        raise InvalidRequest(
            'input_schema: must describe an object ("type": "object").', param="input_schema"
        )
    if len(repr(schema)) > MAX_SCHEMA_BYTES:
        raise InvalidRequest("input_schema: is too large (64 KiB at most).", param="input_schema")
    reference = outside_reference(schema)
    if reference is not None:  # never fetched: see api/tool/validation.py
        raise InvalidRequest(
            f"input_schema: {reference!r}: only references within the schema (#/…) are allowed.",
            param="input_schema",
        )
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise InvalidRequest(
            f"input_schema: not a valid JSON Schema at {where}: {exc.message}",
            param="input_schema",
        ) from None
    except RecursionError:
        raise InvalidRequest("input_schema: nests too deeply.", param="input_schema") from None


async def create_tool(
    session: AsyncSession,
    box: SecretBox,
    principal: Principal,
    data: ToolCreate,
    *,
    allow_private_webhooks: bool,
) -> tuple[Tool, str]:
    check_input_schema(data.input_schema)
    await check_url(data.webhook_url, allow_private=allow_private_webhooks, param="webhook_url")
    repository = ToolRepository(session, principal.tenant_id)
    if await repository.by_name(data.name) is not None:
        raise Conflict(f"A tool named {data.name!r} already exists.", param="name")
    secret = new_secret()
    tool = Tool(
        tenant_id=principal.tenant_id,
        name=data.name,
        description=data.description,
        input_schema=data.input_schema,
        webhook_url=data.webhook_url,
        timeout_ms=data.timeout_ms,
        signing_secret=box.seal(secret),
    )
    session.add(tool)
    await session.flush()
    return tool, secret


async def get_tool(session: AsyncSession, principal: Principal, tool_id: uuid.UUID) -> Tool:
    tool = await ToolRepository(session, principal.tenant_id).get(tool_id)
    if tool is None:
        raise NotFound(f"No tool with id {tool_id}.", param="id")
    return tool


async def list_tools(
    session: AsyncSession, principal: Principal, *, limit: int, cursor: str | None
) -> Page[Tool]:
    repository = ToolRepository(session, principal.tenant_id)
    return await repository.paginate(repository.base(), limit=limit, cursor=cursor)


async def delete_tool(session: AsyncSession, principal: Principal, tool_id: uuid.UUID) -> Tool:
    tool = await get_tool(session, principal, tool_id)
    await ToolRepository(session, principal.tenant_id).remove(tool)
    return tool


async def rotate_secret(
    session: AsyncSession, box: SecretBox, principal: Principal, tool_id: uuid.UUID
) -> tuple[Tool, str]:
    tool = await get_tool(session, principal, tool_id)
    secret = new_secret()
    tool.signing_secret = box.seal(secret)
    await session.flush()
    return tool, secret


async def resolve(session: AsyncSession, tenant_id: uuid.UUID, names: list[str]) -> list[Tool]:
    """The registered tools a turn names, in its order; an unknown name is the client's error."""
    found = {tool.name: tool for tool in await ToolRepository(session, tenant_id).by_names(names)}
    missing = [name for name in names if name not in found]
    if missing:
        raise InvalidRequest(f"tools: no registered tool named {missing[0]!r}.", param="tools")
    return [found[name] for name in dict.fromkeys(names)]
