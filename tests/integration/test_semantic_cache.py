"""The semantic cache (SPEC §5.10): a question asked in other words gets the stored answer, with
search's real embedding model and vector store (qdrant-client's local mode behind the server's
code path with Redis; the embedded Qdrant Edge without); unrelated questions, other tenants,
models and system prompts never do, and nothing personal is matched or stored."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from api.settings import Settings
from tests.factories.search import SearchApp, search_app
from tests.factories.tenants import create_key, create_tenant
from tests.factories.usage import logs_when_seen

QUESTION = "What is the capital city of France? Please answer in one sentence."
# Written for this test: each says the same as QUESTION in other words.
PARAPHRASES = [
    "What is the capital city of France? Answer in one sentence please.",
    "Please tell me in one sentence: what is the capital city of France?",
]
UNRELATED = [
    "How do I cook fresh pasta at home without a pasta machine?",
    "What is the capital city of Germany? Please answer in one sentence.",
]
SYSTEM = {"role": "system", "content": "You are a concise geography tutor."}


@pytest.fixture
def semantic_settings(gateway_settings: Settings) -> Settings:
    """Search on (its model and a vector store), pointed at the fake upstream: the cache keeps
    live answers only."""
    update: dict[str, object] = {"search_enabled": True}
    if gateway_settings.redis_url:
        update["qdrant_url"] = ":memory:"
    return gateway_settings.model_copy(update=update)


@pytest.fixture
async def app(semantic_settings: Settings):
    async with search_app(semantic_settings) as running:
        yield running


async def _tenant(app: SearchApp, **semantic: Any) -> tuple[Any, dict[str, str]]:
    tenant = await create_tenant(app.client)
    answer = await app.client.put(
        "/v1/settings",
        json={"cache": {"enabled": True}, "semantic_cache": {"enabled": True, **semantic}},
        headers=tenant.headers,
    )
    assert answer.status_code == 200, answer.text
    key = await create_key(app.client, tenant)
    return tenant, {"Authorization": f"Bearer {key['secret']}"}


def _chat(text: str, model: str = "gpt-4o-mini", system: dict[str, str] = SYSTEM) -> dict:
    return {"model": model, "messages": [system, {"role": "user", "content": text}]}


async def _ask(app: SearchApp, headers: dict[str, str], body: dict) -> Any:
    answer = await app.client.post("/v1/chat/completions", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer


async def _indexed(app: SearchApp, tenant_id: str, count: int) -> None:
    """The questions stored so far are in the vector store (it is written in the background)."""
    store = app.search.cache_store
    assert store is not None
    for _ in range(600):
        if await store.count(uuid.UUID(tenant_id)) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the question was never indexed")


async def test_a_paraphrase_gets_the_stored_answer(app: SearchApp):
    tenant, headers = await _tenant(app)
    first = await _ask(app, headers, _chat(QUESTION))
    assert first.headers["x-cache"] == "MISS"
    await _indexed(app, tenant.id, 1)
    for paraphrase in PARAPHRASES:
        again = await _ask(app, headers, _chat(paraphrase))
        assert again.headers["x-cache"] == "SEMANTIC_HIT", paraphrase
        assert float(again.headers["x-semantic-score"]) >= 0.92
        assert again.json() == first.json()
    for unrelated in UNRELATED:
        other = await _ask(app, headers, _chat(unrelated))
        assert other.headers["x-cache"] == "MISS", unrelated
    logs = await logs_when_seen(app.client, tenant.headers, 5)
    kinds = sorted(str(log["cache"]) for log in logs)
    assert kinds == ["None", "None", "None", "semantic", "semantic"]


async def test_nothing_crosses_tenants_models_or_system_prompts(app: SearchApp):
    tenant, headers = await _tenant(app)
    _, other_tenant = await _tenant(app)
    await _ask(app, headers, _chat(QUESTION))
    await _indexed(app, tenant.id, 1)
    paraphrase = PARAPHRASES[0]
    crossed = [
        await _ask(app, other_tenant, _chat(paraphrase)),
        await _ask(app, headers, _chat(paraphrase, model="gpt-4o")),
        await _ask(app, headers, _chat(paraphrase, system={"role": "system", "content": "Hi"})),
    ]
    assert [answer.headers["x-cache"] for answer in crossed] == ["MISS"] * 3
    same = await _ask(app, headers, _chat(paraphrase))
    assert same.headers["x-cache"] == "SEMANTIC_HIT"


async def test_personal_and_short_questions_are_never_matched(app: SearchApp):
    tenant, headers = await _tenant(app, threshold=0.5)
    personal = "Write a polite reply to jane.doe@example.com about her late invoice please."
    await _ask(app, headers, _chat(personal))
    await _ask(app, headers, _chat("Hi there, how are you?"))  # 30 characters or fewer
    await _ask(app, headers, _chat(QUESTION))
    await _indexed(app, tenant.id, 1)
    await asyncio.sleep(0.5)  # anything else queued would be in by now
    assert await app.search.cache_store.count(uuid.UUID(tenant.id)) == 1
    similar = "Write a polite reply to john.roe@example.com about his late invoice please."
    answer = await _ask(app, headers, _chat(similar))
    assert answer.headers["x-cache"] == "MISS"


async def test_the_oldest_questions_are_evicted_past_the_budget(app: SearchApp):
    tenant, headers = await _tenant(app, max_entries=2)
    questions = [QUESTION, UNRELATED[0], UNRELATED[1]]
    for text in questions:
        await _ask(app, headers, _chat(text))
    await _indexed(app, tenant.id, 2)
    store = app.search.cache_store
    for _ in range(100):  # the eviction of the first is a background deletion too
        if await store.count(uuid.UUID(tenant.id)) == 2:
            break
        await asyncio.sleep(0.1)
    assert await store.count(uuid.UUID(tenant.id)) == 2
    evicted = await _ask(app, headers, _chat(PARAPHRASES[0]))
    assert evicted.headers["x-cache"] == "MISS"  # its question was the oldest
