"""Tenant and key isolation for every route that names an object, generated from the route
table (SPEC §6): another tenant's master key, another tenant's standard key, and another
user's standard key in the same tenant, each reading, writing and deleting the object by its
id, get a 404 (or, on a master-only route, the same 403 a made-up id gets), never the object,
and change nothing. A new route with an id in its path fails here until it has an entry."""

from __future__ import annotations

import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from api.billing.models import BillingRun
from api.db import create_sessionmaker
from api.settings import Settings
from tests.conftest import SECRET_KEY, app_client
from tests.factories.tenants import bearer, create_key, create_tenant

# Routes whose path parameter is not an object a tenant owns, and why.
NOT_OBJECTS = {
    "model": "a model name from the catalog, the same for every tenant",
    "name": "a provider name: each tenant reads and writes only its own credentials",
    "tenant_id": "Stripe's webhook: authenticated by Stripe's signature, not a key",
}
# A body that passes validation, so a write reaches the lookup of the object.
BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/v1/keys/{key_id}"): {"name": "pwned", "max_spend_usd": 0},
    ("POST", "/v1/keys/{key_id}/rotate"): None,
    ("POST", "/v1/threads/{thread_id}/messages"): {"model": "gpt-4o-mini", "content": "pwned"},
    ("POST", "/v1/conversations/{conversation_id}"): {"metadata": {"pwned": "yes"}},
    ("POST", "/v1/conversations/{conversation_id}/items"): {
        "items": [{"type": "message", "role": "user", "content": "pwned"}]
    },
    ("POST", "/v1/tools/{tool_id}/rotate-secret"): None,
}
# Routes a standard key may not use at all: it gets 403 for any id, so the 403 says nothing
# of the object (checked: the same answer as for a made-up id).
MASTER_ONLY = ("/v1/keys/", "/v1/tools/", "/v1/billing/")


def _routes() -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as data_dir:
        app = create_app(Settings(data_dir=Path(data_dir), secret_key=SECRET_KEY))
        document = app.openapi()
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if "{" in path and method in ("get", "post", "put", "patch", "delete")
    ]


@dataclass
class Owned:
    """One object of each kind, by path parameter, and the headers of the key that owns it."""

    ids: dict[str, str]
    owner: dict[str, str]
    master: dict[str, str]


async def _objects(client: httpx.AsyncClient, engine: AsyncEngine, tenant: Any) -> Owned:
    user = await create_key(client, tenant, name="owner", test=True)
    owner = bearer(user["secret"])
    thread = await client.post("/v1/threads", json={}, headers=owner)
    job = await client.post(
        "/v1/jobs",
        json={"endpoint": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}},
        headers=owner,
    )  # fmt: skip
    response = await client.post(
        "/v1/responses", json={"model": "gpt-4o-mini", "input": "hello"}, headers=owner
    )
    conversation = await client.post(
        "/v1/conversations",
        json={"items": [{"type": "message", "role": "user", "content": "kept"}]},
        headers=owner,
    )
    tool = await client.post(
        "/v1/tools",
        json={"name": "lookup", "description": "d", "webhook_url": "http://127.0.0.1:9/h",
              "input_schema": {"type": "object"}},
        headers=tenant.headers,
    )  # fmt: skip
    for created in (thread, job, response, conversation, tool):
        assert created.status_code in (200, 201, 202), created.text
    conversation_id = conversation.json()["id"]
    items = await client.get(f"/v1/conversations/{conversation_id}/items", headers=owner)
    run = BillingRun(tenant_id=uuid.UUID(tenant.id), period="2026-01", currency="usd",
                     markup_bps=0)  # fmt: skip
    async with create_sessionmaker(engine)() as session, session.begin():
        session.add(run)
    ids = {
        "key_id": user["id"], "thread_id": thread.json()["id"], "job_id": job.json()["id"],
        "response_id": response.json()["id"], "conversation_id": conversation_id,
        "item_id": items.json()["data"][0]["id"], "tool_id": tool.json()["id"],
        "trace_id": response.headers["x-trace-id"], "run_id": str(run.id),
    }  # fmt: skip
    return Owned(ids=ids, owner=owner, master=tenant.headers)


def _url(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{([^}]+)\}", lambda match: ids[match.group(1)], path)


async def _snapshot(client: httpx.AsyncClient, owned: Owned) -> list[Any]:
    """What the owner reads of every object: unchanged after every attempt."""
    ids = owned.ids
    reads = [
        ("/v1/keys/{key_id}", owned.master), ("/v1/tools/{tool_id}", owned.master),
        ("/v1/billing/runs/{run_id}", owned.master), ("/v1/threads/{thread_id}", owned.owner),
        ("/v1/threads/{thread_id}/messages", owned.owner), ("/v1/jobs/{job_id}", owned.owner),
        ("/v1/responses/{response_id}", owned.owner),
        ("/v1/conversations/{conversation_id}", owned.owner),
        ("/v1/conversations/{conversation_id}/items", owned.owner),
        ("/v1/traces/{trace_id}", owned.master),
    ]  # fmt: skip
    found = []
    for path, headers in reads:
        response = await client.get(_url(path, ids), headers=headers)
        assert response.status_code == 200, (path, response.text)
        body = response.json()
        if isinstance(body, dict):  # what a job's run or a read itself moves on its own
            for moving in ("status", "updated_at", "completed_at", "result", "attempts",
                           "started_at", "finished_at", "cost_micros", "usage"):  # fmt: skip
                body.pop(moving, None)
        found.append(body)
    return found


class TestIsolationMatrix:
    async def test_every_route_with_an_id_hides_other_tenants_and_other_users_objects(
        self, settings: Settings, engine: AsyncEngine
    ):
        routes = _routes()
        named = {name for _, path in routes for name in re.findall(r"\{([^}]+)\}", path)}
        webhooks = settings.model_copy(update={"allow_private_webhooks": True})
        async with app_client(webhooks) as client:
            alpha, beta = await create_tenant(client, "alpha"), await create_tenant(client, "beta")
            theirs = await _objects(client, engine, beta)
            missing = named - set(theirs.ids) - set(NOT_OBJECTS)
            assert not missing, f"add an object for {sorted(missing)} to the isolation matrix"
            alpha_user = bearer(
                (await create_key(client, alpha, name="a-user", test=True))["secret"]
            )
            beta_other = bearer(
                (await create_key(client, beta, name="b-other", test=True))["secret"]
            )
            before = await _snapshot(client, theirs)
            made_up = {name: str(uuid.uuid4()) for name in theirs.ids}
            attackers = {
                "another tenant's master key": alpha.headers,
                "another tenant's standard key": alpha_user,
                "another user's standard key": beta_other,
            }
            checked = 0
            for method, path in routes:
                names = re.findall(r"\{([^}]+)\}", path)
                if any(name in NOT_OBJECTS for name in names):
                    continue
                body = BODIES.get((method, path))
                for who, headers in attackers.items():
                    url = _url(path, theirs.ids)
                    response = await client.request(method, url, json=body, headers=headers)
                    label = (who, method, path, response.status_code, response.text[:200])
                    if response.status_code == 403:  # only a standard key on a master route
                        assert path.startswith(MASTER_ONLY), label
                        assert "standard" in who, label
                        fake = await client.request(
                            method, _url(path, made_up), json=body, headers=headers
                        )
                        assert (fake.status_code, fake.json()) == (403, response.json()), label
                    else:
                        assert response.status_code == 404, label
                    for object_id in theirs.ids.values():  # the one asked for may be echoed
                        if object_id not in url:
                            assert object_id not in response.text, label
                    checked += 1
            assert checked >= 3 * 25
            assert await _snapshot(client, theirs) == before
