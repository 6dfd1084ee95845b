"""A hard cap holds for every request shape a client can send (SPEC §7, `api/gateway/exposure.py`).

An upstream that bills each request the most its fields allow (`tests/fakes/max_bill.py`),
and answers slowly enough that all are in flight at once, is sent 20 concurrent requests of
one shape on a key capped at four and a half of them: the spend recorded, and so what the
upstream billed, stays within the cap. (A cap of one would not tell: a reservation that
undercounts by less than half still admits just one. Here undercounting by a fifth, as cache
writes billed as plain input would, admits five.)
Fields with no known bound are refused before anything is sent.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from api.app import create_app
from api.gateway import budget
from api.settings import Settings
from tests.factories.chat import HELLO
from tests.factories.tenants import bearer, create_key, create_tenant
from tests.factories.usage import logs_when_settled, usage_when_settled
from tests.fakes.max_bill import MaxBiller
from tests.fakes.server import serve_in_thread

SYSTEM = [{"type": "text", "text": "Be brief. " * 2_000}]  # cache writes are of input
PDF = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
SEARCH = {"type": "web_search_20250305", "name": "web_search"}
FLASH = "/v1beta/models/gemini-2.5-flash:generateContent"
GEMINI_HELLO = [{"role": "user", "parts": [{"text": "Hello"}]}]
VIDEO = {"fileData": {"mimeType": "video/mp4", "fileUri": "https://www.youtube.com/watch?v=x"}}

SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat n": ("/v1/chat/completions",
               {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 200, "n": 8}),
    "cache writes, 5 minutes": ("/v1/messages", {
        "model": "claude-sonnet-4", "max_tokens": 50, "messages": HELLO,
        "system": [{**SYSTEM[0], "cache_control": {"type": "ephemeral"}}]}),
    "cache writes, 1 hour": ("/v1/messages", {
        "model": "claude-sonnet-4", "max_tokens": 50, "messages": HELLO,
        "system": [{**SYSTEM[0], "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}),
    "web search without max_uses": ("/v1/messages", {
        "model": "claude-sonnet-4", "max_tokens": 50, "messages": HELLO, "tools": [SEARCH]}),
    "web search with max_uses": ("/v1/messages", {
        "model": "claude-sonnet-4", "max_tokens": 50, "messages": HELLO,
        "tools": [{**SEARCH, "max_uses": 3}]}),
    "web fetch": ("/v1/messages", {
        "model": "claude-sonnet-4", "max_tokens": 50, "messages": HELLO,
        "tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]}),
    "document by URL": ("/v1/messages", {
        "model": "claude-sonnet-4", "max_tokens": 50,
        "messages": [{"role": "user", "content": [PDF, {"type": "text", "text": "Sum up."}]}]}),
    "Responses input file": ("/v1/responses", {
        "model": "gpt-4o", "max_output_tokens": 50, "input": [{"role": "user", "content": [
            {"type": "input_file", "file_url": "https://example.com/a.pdf"}]}]}),
    "long context": ("/v1/messages", {
        "model": "claude-sonnet-4", "max_tokens": 50,
        "messages": [{"role": "user", "content": "word " * 50_000}]}),
    "dated snapshot": ("/v1/chat/completions",
                       {"model": "gpt-4o-2024-05-13", "messages": HELLO, "max_tokens": 300}),
    "Gemini candidateCount": (FLASH, {"contents": GEMINI_HELLO,
                              "generationConfig": {"maxOutputTokens": 200, "candidateCount": 8}}),
    "Gemini without maxOutputTokens": (FLASH, {"contents": GEMINI_HELLO}),
    "Gemini file by URL": (FLASH, {
        "contents": [{"role": "user", "parts": [VIDEO, {"text": "Sum up."}]}],
        "generationConfig": {"maxOutputTokens": 50}}),
}  # fmt: skip

REFUSED: dict[str, tuple[str, dict[str, Any], str]] = {
    "chat web_search_options": ("/v1/chat/completions", {"web_search_options": {}},
                                "web_search_options"),
    "chat priority tier": ("/v1/chat/completions", {"service_tier": "priority"}, "service_tier"),
    "chat audio output": ("/v1/chat/completions", {"modalities": ["text", "audio"]},
                          "modalities"),
    "chat predicted output": ("/v1/chat/completions",
                              {"prediction": {"type": "content", "content": "x"}}, "prediction"),
    "chat n out of range": ("/v1/chat/completions", {"n": 0}, "n"),
    "messages MCP servers": ("/v1/messages", {"mcp_servers": [{"type": "url", "url": "x"}]},
                             "mcp_servers"),
    "messages code execution": ("/v1/messages",
                                {"tools": [{"type": "code_execution_20250522", "name": "c"}]},
                                "tools[0]"),
    "messages search max_uses too high": ("/v1/messages", {"tools": [{**SEARCH, "max_uses": 500}]},
                                          "tools[0].max_uses"),
    "Responses MCP tool": ("/v1/responses", {"tools": [{"type": "mcp", "server_label": "x"}]},
                           "tools[0]"),
    "Responses stored prompt": ("/v1/responses", {"prompt": {"id": "pmpt_1"}}, "prompt"),
    "unknown dated snapshot": ("/v1/chat/completions", {"model": "gpt-4o-2023-01-01"}, "model"),
    "Gemini cached content": (FLASH, {"cachedContent": "cachedContents/x"}, "cachedContent"),
    "Gemini priority tier": (FLASH, {"serviceTier": "priority"}, "serviceTier"),
    "Gemini image output": (FLASH, {"generationConfig": {"responseModalities": ["IMAGE"]}},
                            "generationConfig.responseModalities"),
    "Gemini MCP servers": (FLASH, {"tools": [{"mcpServers": []}]}, "tools[0].mcpServers"),
    "Gemini candidateCount out of range": (FLASH, {"generationConfig": {"candidateCount": 9}},
                                           "generationConfig.candidateCount"),
}  # fmt: skip
BASES = {
    "/v1/chat/completions": {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 10},
    "/v1/messages": {"model": "claude-sonnet-4", "messages": HELLO, "max_tokens": 10},
    "/v1/responses": {"model": "gpt-4o", "input": "Hi", "max_output_tokens": 10},
    FLASH: {"contents": GEMINI_HELLO},
}


@pytest.fixture(scope="module")
def biller() -> Iterator[tuple[MaxBiller, str]]:
    fake = MaxBiller()
    with serve_in_thread(fake.app()) as url:
        yield fake, url


@pytest.fixture
async def gateway(settings: Settings, biller: tuple[MaxBiller, str]) -> Any:
    fake, url = biller
    fake.seen.clear()
    fake.billed.clear()
    fake.delay_seconds = 0.0
    configured = settings.model_copy(
        update={
            "openai_api_key": SecretStr("sk-operator"),
            "openai_base_url": f"{url}/openai/v1",
            "anthropic_api_key": SecretStr("sk-ant-operator"),
            "anthropic_base_url": f"{url}/anthropic",
            "gemini_api_key": SecretStr("AIza-operator"),
            "gemini_base_url": f"{url}/gemini",
        }
    )
    with serve_in_thread(create_app(configured)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            yield http, fake


async def _spend(http: httpx.AsyncClient, tenant: Any, requests: int) -> int:
    usage = await usage_when_settled(http, tenant, requests)
    spent: int = usage["totals"]["cost_micros"]
    return spent


class TestEveryShapeUnderACap:
    @pytest.mark.parametrize("shape", list(SHAPES))
    async def test_twenty_concurrent_requests_stay_within_a_cap_of_four_and_a_half(
        self, gateway: tuple[httpx.AsyncClient, MaxBiller], shape: str
    ):
        http, fake = gateway
        path, body = SHAPES[shape]
        # What one request of this shape costs when the upstream bills all it may.
        free = await create_tenant(http)
        alone = await create_key(http, free)
        response = await http.post(path, json=body, headers=bearer(alone["secret"]))
        assert response.status_code == 200, response.text
        one = await _spend(http, free, 1)
        assert one > 0

        tenant = await create_tenant(http)
        key = await create_key(http, tenant, max_spend_usd=4.5 * one / 1_000_000)
        before = len(fake.seen)
        fake.delay_seconds = 0.5
        statuses = Counter(
            await asyncio.gather(
                *(
                    _status(http.post(path, json=body, headers=bearer(key["secret"])))
                    for _ in range(20)
                )
            )
        )
        assert set(statuses) <= {200, 402}, statuses
        assert statuses[200] >= 1
        assert len(fake.seen) - before == statuses[200]
        assert await _spend(http, tenant, 20) <= 4.5 * one

    async def test_a_search_tool_without_max_uses_is_sent_with_the_default(
        self, gateway: tuple[httpx.AsyncClient, MaxBiller]
    ):
        http, fake = gateway
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        _, body = SHAPES["web search without max_uses"]
        response = await http.post("/v1/messages", json=body, headers=bearer(key["secret"]))
        assert response.status_code == 200, response.text
        assert fake.seen[-1]["tools"] == [{**SEARCH, "max_uses": 5}]
        # Five searches at $10 per thousand, on top of the tokens.
        assert fake.billed[-1]["server_tool_use"] == {"web_search_requests": 5}

    async def test_a_dated_snapshot_is_billed_at_its_own_price(
        self, gateway: tuple[httpx.AsyncClient, MaxBiller]
    ):
        http, fake = gateway
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        _, body = SHAPES["dated snapshot"]
        response = await http.post("/v1/chat/completions", json=body, headers=bearer(key["secret"]))
        assert response.status_code == 200, response.text
        assert fake.seen[-1]["model"] == "gpt-4o-2024-05-13"  # never stripped of its date
        billed = fake.billed[-1]
        # $5 in, $15 out per million: this snapshot's own price, twice gpt-4o's input.
        expected = billed["prompt_tokens"] * 5 + billed["completion_tokens"] * 15
        assert await _spend(http, tenant, 1) == expected


class TestRefusedFields:
    @pytest.mark.parametrize("case", list(REFUSED))
    async def test_a_field_without_a_known_bound_is_refused_naming_it(
        self, gateway: tuple[httpx.AsyncClient, MaxBiller], case: str
    ):
        http, fake = gateway
        path, extra, param = REFUSED[case]
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        response = await http.post(
            path, json={**BASES[path], **extra}, headers=bearer(key["secret"])
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error.get("param", param) == param, error
        assert param.split("[")[0] in error["message"]
        assert fake.seen == []


async def _status(request: Any) -> int:
    response = await request
    status: int = response.status_code
    return status


CUT_OFF: dict[str, tuple[str, dict[str, Any]]] = {
    "chat to GPT": ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO}),
    "messages to Claude": ("/v1/messages", {"model": "claude-sonnet-4", "messages": HELLO}),
    "chat to Claude": ("/v1/chat/completions", {"model": "claude-sonnet-4", "messages": HELLO}),
    "thread turn to GPT": ("thread", {"model": "gpt-4o-mini", "content": "Hello"}),
}


class TestCutOffStreams:
    @pytest.mark.parametrize("case", list(CUT_OFF))
    async def test_a_stream_left_at_its_first_event_is_billed_what_upstream_produced(
        self, gateway: tuple[httpx.AsyncClient, MaxBiller], case: str
    ):
        """The client leaves after the first text event; the upstream goes on to report 300
        output tokens, all but one of them reasoning the client never saw."""
        http, fake = gateway
        fake.delay_seconds = 1.0
        tenant = await create_tenant(http)
        key = await create_key(http, tenant, max_spend_usd=10)
        headers = bearer(key["secret"])
        path, body = CUT_OFF[case]
        if path == "thread":
            thread = (await http.post("/v1/threads", json={}, headers=headers)).json()
            path = f"/v1/threads/{thread['id']}/messages"
        payload = {**body, "max_tokens": 300, "stream": True}
        async with http.stream("POST", path, json=payload, headers=headers) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if "Hi" in line:
                    break  # and hang up
        logs = await logs_when_settled(http, tenant, 1)
        assert logs[0]["status"] == 499
        assert logs[0]["output_tokens"] == 300  # what the upstream reported, not what was seen
        assert fake.billed[-1]["model"] == fake.seen[-1]["model"]
        assert logs[0]["cost_micros"] > 0


class TestLongRequests:
    async def test_a_request_outliving_the_hold_time_keeps_its_hold(
        self, gateway: tuple[httpx.AsyncClient, MaxBiller], monkeypatch: pytest.MonkeyPatch
    ):
        http, fake = gateway
        body = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 200}
        free = await create_tenant(http)
        alone = await create_key(http, free)
        await http.post("/v1/chat/completions", json=body, headers=bearer(alone["secret"]))
        one = await _spend(http, free, 1)

        monkeypatch.setattr(budget, "HOLD_SECONDS", 0.6)  # refreshed every 0.2 s
        fake.delay_seconds = 2.0
        tenant = await create_tenant(http)
        key = await create_key(http, tenant, max_spend_usd=one / 1_000_000)  # room for one
        headers = bearer(key["secret"])
        first = asyncio.create_task(http.post("/v1/chat/completions", json=body, headers=headers))
        await asyncio.sleep(1.2)  # twice the hold time: only a refresh keeps it
        second = await http.post("/v1/chat/completions", json=body, headers=headers)
        assert second.status_code == 402, second.text
        assert (await first).status_code == 200
        assert await _spend(http, tenant, 2) <= one


async def test_a_chained_response_reserves_its_whole_stored_history(
    gateway: tuple[httpx.AsyncClient, MaxBiller],
):
    """`previous_response_id` is resolved before the reservation: a short new input on a long
    stored history is held at the history's worst case, so twenty at once stay within a cap
    of four and a half of them."""
    http, fake = gateway
    history = {"model": "gpt-4o", "input": "lorem ipsum " * 4000, "max_output_tokens": 10}

    free = await create_tenant(http)
    alone = bearer((await create_key(http, free))["secret"])
    first = (await http.post("/v1/responses", json=history, headers=alone)).json()
    chained = {"model": "gpt-4o", "input": "Go on.", "max_output_tokens": 10,
               "previous_response_id": first["id"]}  # fmt: skip
    response = await http.post("/v1/responses", json=chained, headers=alone)
    assert response.status_code == 200, response.text
    logs = await logs_when_settled(http, free, 2)
    costs = sorted(entry["cost_micros"] for entry in logs)
    assert costs[0] > 0
    one_chain = max(costs)  # the chained request: the whole history and the new input

    tenant = await create_tenant(http)
    key = await create_key(http, tenant, max_spend_usd=(costs[0] + 4.5 * one_chain) / 1_000_000)
    headers = bearer(key["secret"])
    mine = (await http.post("/v1/responses", json=history, headers=headers)).json()
    body = {**chained, "previous_response_id": mine["id"]}
    before = len(fake.seen)
    fake.delay_seconds = 0.5
    statuses = Counter(await asyncio.gather(
        *(_status(http.post("/v1/responses", json=body, headers=headers)) for _ in range(20))
    ))  # fmt: skip
    assert set(statuses) <= {200, 402}, statuses
    assert 1 <= statuses[200] <= 5
    assert len(fake.seen) - before == statuses[200]
    assert await _spend(http, tenant, 21) <= costs[0] + 4.5 * one_chain
