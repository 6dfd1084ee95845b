"""The secret shield through a real server: what each fake provider receives, per dialect.

Every preset's samples are put in every place a request can carry text (system prompts,
earlier turns, tool calls and tool results, the last message) and must arrive masked; prose
and ordinary numbers must arrive as sent.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import tollgate
from sqlalchemy.ext.asyncio import AsyncEngine

from api.shield.presets import PRESET_NAMES
from api.tenant.models import Tenant
from tests.factories.audio import tone_wav
from tests.factories.tenants import TenantFixture, bearer, create_key, create_tenant
from tests.factories.usage import logs_when_settled
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.upstream import FakeUpstream

SAMPLES: dict[str, list[str]] = {
    "aws_access_key_id": ["AKIAIOSFODNN7EXAMPLE"],
    "aws_secret_access_key": ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"],
    "openai_key": ["sk-proj-Abc123def456GHI789jkl012MNO345pqr678STU901vwx"],
    "anthropic_key": ["sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789-ABCDEFGHIJ_klm"],
    "google_api_key": ["AIzaSyA1234567890abcdefghijklmnopqrstuv"],
    "credit_card": ["4111 1111 1111 1111", "5500-0000-0000-0004"],
    "email": ["alice.smith+billing@example.co.uk"],
    "jwt": [
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    ],
    "phone": ["+44 20 7946 0958", "(415) 555-2671"],
}
# Every sample, as text: the AWS secret after the label that makes it recognisable.
SECRETS = " ; ".join(
    f"aws_secret_access_key={sample}" if name == "aws_secret_access_key" else sample
    for name, samples in SAMPLES.items()
    for sample in samples
)
PROSE = (
    "Order 1234567890 shipped on 2024-12-07 at 10:30; version 1.2.3, 42 items, "
    "timestamp 1733590000000, total 4111111111111112."
)
SHIELD_ON = {"shield": {"enabled": True}}


async def _tenant(http: httpx.AsyncClient, settings: dict[str, Any] | None = SHIELD_ON) -> Any:
    tenant = await create_tenant(http)
    if settings is not None:
        response = await http.put("/v1/settings", json=settings, headers=tenant.headers)
        assert response.status_code == 200, response.text
    key = await create_key(http, tenant)
    return tenant, key["secret"]


def _assert_masked(body: dict[str, Any], places: int) -> None:
    """No sample is left, each preset's mask shows up in every place, prose is untouched."""
    sent = json.dumps(body)
    for samples in SAMPLES.values():
        for sample in samples:
            assert sample not in sent
    for name, samples in SAMPLES.items():
        assert sent.count(f"[REDACTED:{name}]") >= places * len(samples), name
    assert PROSE in sent


def _openai_chat(model: str) -> dict[str, Any]:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "lookup", "arguments": json.dumps({"q": SECRETS})}}  # fmt: skip
    return {
        "model": model,
        "max_tokens": 100,
        "messages": [
            {"role": "system", "content": f"Notes: {SECRETS}"},
            {"role": "user", "content": f"First turn: {SECRETS}"},
            {"role": "assistant", "content": f"Earlier answer: {SECRETS}", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"r": SECRETS})},
            {"role": "user", "content": [{"type": "text", "text": f"{SECRETS} {PROSE}"}]},
        ],
        "tools": [
            {"type": "function", "function": {
                "name": "lookup", "description": "Looks a record up.",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            }}
        ],
    }  # fmt: skip


def _anthropic_messages() -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4",
        "max_tokens": 100,
        "system": f"Notes: {SECRETS}",
        "messages": [
            {"role": "user", "content": f"First turn: {SECRETS}"},
            {"role": "assistant", "content": [
                {"type": "text", "text": f"Earlier answer: {SECRETS}"},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": SECRETS}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": [{"type": "text", "text": SECRETS}]},
                {"type": "text", "text": f"{SECRETS} {PROSE}"},
            ]},
        ],
        "tools": [{"name": "lookup", "description": "Looks a record up.",
                   "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}],
    }  # fmt: skip


def _gemini_generate() -> dict[str, Any]:
    return {
        "systemInstruction": {"parts": [{"text": f"Notes: {SECRETS}"}]},
        "contents": [
            {"role": "user", "parts": [{"text": f"First turn: {SECRETS}"}]},
            {"role": "model", "parts": [
                {"text": f"Earlier answer: {SECRETS}"},
                {"functionCall": {"name": "lookup", "args": {"q": SECRETS}}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "lookup", "response": {"result": SECRETS}}},
                {"text": f"{SECRETS} {PROSE}"},
            ]},
        ],
        "tools": [{"functionDeclarations": [{
            "name": "lookup", "description": "Looks a record up.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        }]}],
        "generationConfig": {"maxOutputTokens": 100},
    }  # fmt: skip


class TestEveryDialect:
    async def test_chat_completions_to_openai(
        self, every_http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant, secret = await _tenant(every_http)
        body = _openai_chat("gpt-4o")
        response = await every_http.post("/v1/chat/completions", json=body, headers=bearer(secret))
        assert response.status_code == 200, response.text
        _assert_masked(upstream.seen[-1].body, places=5)
        assert body["messages"][0]["content"] == f"Notes: {SECRETS}"  # the client's, as sent
        # The request log holds no original either.
        logs = await logs_when_settled(every_http, tenant, 1)
        for samples in SAMPLES.values():
            assert all(sample not in json.dumps(logs) for sample in samples)

    async def test_chat_completions_stream_to_openai(
        self, every_http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        _, secret = await _tenant(every_http)
        body = {**_openai_chat("gpt-4o"), "stream": True}
        response = await every_http.post("/v1/chat/completions", json=body, headers=bearer(secret))
        assert response.status_code == 200, response.text
        _assert_masked(upstream.seen[-1].body, places=5)

    async def test_messages_to_anthropic(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic
    ):
        _, secret = await _tenant(every_http)
        response = await every_http.post(
            "/v1/messages", json=_anthropic_messages(), headers=bearer(secret)
        )
        assert response.status_code == 200, response.text
        _assert_masked(claude.seen[-1].body, places=5)

    async def test_generate_content_to_gemini(
        self, every_http: httpx.AsyncClient, gemini: FakeGemini
    ):
        _, secret = await _tenant(every_http)
        response = await every_http.post(
            "/v1beta/models/gemini-2.5-flash:generateContent",
            json=_gemini_generate(),
            headers={"x-goog-api-key": secret},
        )
        assert response.status_code == 200, response.text
        _assert_masked(gemini.seen[-1].body, places=5)

    async def test_a_claude_model_through_chat_completions_is_masked_after_translation(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic
    ):
        _, secret = await _tenant(every_http)
        body = _openai_chat("claude-sonnet-4")
        response = await every_http.post("/v1/chat/completions", json=body, headers=bearer(secret))
        assert response.status_code == 200, response.text
        _assert_masked(claude.seen[-1].body, places=5)

    async def test_a_gemini_model_through_messages_is_masked_after_translation(
        self, every_http: httpx.AsyncClient, gemini: FakeGemini
    ):
        _, secret = await _tenant(every_http)
        body = {**_anthropic_messages(), "model": "gemini-2.5-flash"}
        response = await every_http.post("/v1/messages", json=body, headers=bearer(secret))
        assert response.status_code == 200, response.text
        _assert_masked(gemini.seen[-1].body, places=5)

    async def test_exact_token_counts_are_asked_with_masked_bodies(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic, gemini: FakeGemini
    ):
        _, secret = await _tenant(every_http)
        body = {k: v for k, v in _anthropic_messages().items() if k != "max_tokens"}
        response = await every_http.post(
            "/v1/messages/count_tokens", json=body, headers=bearer(secret)
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-tollgate-token-count"] == "exact"
        _assert_masked(claude.seen[-1].body, places=5)
        body = {k: v for k, v in _gemini_generate().items() if k != "generationConfig"}
        response = await every_http.post(
            "/v1beta/models/gemini-2.5-flash:countTokens",
            json={"contents": body["contents"]},
            headers={"x-goog-api-key": secret},
        )
        assert response.status_code == 200, response.text
        sent = json.dumps(gemini.seen[-1].body)
        assert "AKIAIOSFODNN7EXAMPLE" not in sent
        assert "[REDACTED:aws_access_key_id]" in sent

    async def test_responses_embeddings_and_upload_text_fields(
        self, every_http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        _, secret = await _tenant(every_http)
        body = {
            "model": "gpt-4o",
            "instructions": f"Notes: {SECRETS}",
            "input": [
                {"role": "user", "content": f"First turn: {SECRETS}"},
                {"role": "user", "content": [{"type": "input_text", "text": f"{SECRETS} {PROSE}"}]},
            ],
        }
        response = await every_http.post("/v1/responses", json=body, headers=bearer(secret))
        assert response.status_code == 200, response.text
        _assert_masked(upstream.seen[-1].body, places=3)
        body = {"model": "text-embedding-3-small", "input": [SECRETS, PROSE]}
        response = await every_http.post("/v1/embeddings", json=body, headers=bearer(secret))
        assert response.status_code == 200, response.text
        _assert_masked(upstream.media[-1].body, places=1)
        audio = tone_wav(1, 8_000)
        response = await every_http.post(
            "/v1/audio/transcriptions",
            headers=bearer(secret),
            data={"model": "whisper-1", "prompt": f"Spell {SECRETS} {PROSE}"},
            files={"file": ("tone.wav", audio, "audio/wav")},
        )
        assert response.status_code == 200, response.text
        seen = upstream.media[-1]
        _assert_masked(seen.body, places=1)
        assert [upload.data for upload in seen.files] == [audio]  # files are not text


class TestSettings:
    async def test_defaults_round_trip_and_rules_are_saved(self, http: httpx.AsyncClient):
        tenant = await create_tenant(http)
        shown = (await http.get("/v1/settings", headers=tenant.headers)).json()["shield"]
        assert shown == {"enabled": False, "presets": list(PRESET_NAMES), "rules": [],
                         "fail": "closed"}  # fmt: skip
        assert set(PRESET_NAMES) == set(SAMPLES)
        shield = {
            "enabled": True, "presets": ["email"], "fail": "open",
            "rules": [{"name": "ticket", "pattern": r"\bTCK-\d+", "mask": "keep_prefix",
                       "keep": 4}],
        }  # fmt: skip
        response = await http.put("/v1/settings", json={"shield": shield}, headers=tenant.headers)
        assert response.status_code == 200, response.text
        assert response.json()["shield"] == shield
        shown = (await http.get("/v1/settings", headers=tenant.headers)).json()["shield"]
        assert shown == shield

    @pytest.mark.parametrize(
        ("rule", "why"),
        [
            ({"name": "bad", "pattern": "(unclosed"}, "not a valid regular expression"),
            ({"name": "slow", "pattern": r"(a|aa)+$"}, "catastrophic backtracking"),
            ({"name": "nested", "pattern": r"(a+)+$"}, "catastrophic backtracking"),
            ({"name": "empty", "pattern": r"x?"}, "empty string"),
            ({"name": "long", "pattern": "x" * 1001}, "at most 1000"),
        ],
    )
    async def test_bad_rules_are_refused_naming_the_rule(
        self, http: httpx.AsyncClient, rule: dict[str, Any], why: str
    ):
        tenant = await create_tenant(http)
        rules = [{"name": "fine", "pattern": r"\bTCK-\d+"}, {"name": "fine2", "pattern": "x+"}]
        shield = {"enabled": True, "rules": [*rules, rule]}
        response = await http.put("/v1/settings", json={"shield": shield}, headers=tenant.headers)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "shield.rules[2].pattern"
        assert why in error["message"]
        shown = (await http.get("/v1/settings", headers=tenant.headers)).json()["shield"]
        assert shown["rules"] == []  # nothing saved

    async def test_a_settings_change_reaches_the_gateway_at_once(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant, secret = await _tenant(http, settings=None)
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "mail a@b.co"}]}
        assert (
            await http.post("/v1/chat/completions", json=body, headers=bearer(secret))
        ).is_success
        assert upstream.seen[-1].body["messages"][0]["content"] == "mail a@b.co"
        await http.put("/v1/settings", json=SHIELD_ON, headers=tenant.headers)
        assert (
            await http.post("/v1/chat/completions", json=body, headers=bearer(secret))
        ).is_success
        assert upstream.seen[-1].body["messages"][0]["content"] == "mail [REDACTED:email]"
        off = {"shield": {"enabled": False}}
        await http.put("/v1/settings", json=off, headers=tenant.headers)
        assert (
            await http.post("/v1/chat/completions", json=body, headers=bearer(secret))
        ).is_success
        assert upstream.seen[-1].body["messages"][0]["content"] == "mail a@b.co"

    async def test_tenant_rules_and_formats_apply_to_that_tenant_only(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        shield = {"shield": {"enabled": True, "presets": [], "rules": [
            {"name": "ticket", "pattern": r"\bTCK-\d+", "mask": "keep_suffix", "keep": 3},
            {"name": "project", "pattern": r"(?i)\bproject falcon\b"},
        ]}}  # fmt: skip
        _, masked_secret = await _tenant(http, settings=shield)
        _, other_secret = await _tenant(http, settings=SHIELD_ON)
        text = "TCK-123456 is about Project Falcon, mail a@b.co"
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
        response = await http.post("/v1/chat/completions", json=body, headers=bearer(masked_secret))
        assert response.is_success
        sent = upstream.seen[-1].body["messages"][0]["content"]
        assert sent == "*******456 is about [REDACTED:project], mail a@b.co"
        response = await http.post("/v1/chat/completions", json=body, headers=bearer(other_secret))
        assert response.is_success
        sent = upstream.seen[-1].body["messages"][0]["content"]
        assert sent == "TCK-123456 is about Project Falcon, mail [REDACTED:email]"


async def _store_slow_rule(engine: AsyncEngine, tenant: TenantFixture, fail: str) -> None:
    """A rule saved before patterns were checked (or one `regex` got slower at): written
    straight to the tenant's settings, as no PUT would accept it."""
    rule = {"name": "slow", "pattern": r"(a|aa)+$", "mask": "full", "keep": 0}
    settings = {"shield": {"enabled": True, "presets": ["email"], "rules": [rule], "fail": fail}}
    async with engine.begin() as connection:
        await connection.execute(
            sa.update(Tenant).where(Tenant.id == uuid.UUID(tenant.id)).values(settings=settings)
        )


class TestFailing:
    async def test_fail_closed_refuses_and_sends_nothing(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, engine: AsyncEngine
    ):
        tenant = await create_tenant(http)
        await _store_slow_rule(engine, tenant, "closed")
        secret = (await create_key(http, tenant))["secret"]
        text = "a@b.co " + "a" * 20_000 + "!"
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
        response = await http.post("/v1/chat/completions", json=body, headers=bearer(secret))
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "shield_failed"
        assert response.headers["x-should-retry"] == "false"
        assert upstream.seen == []
        (entry,) = await logs_when_settled(http, tenant, 1)
        assert entry["status"] == 422
        assert entry["cost_micros"] == 0
        # A body the slow rule finishes on in time is masked and sent.
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "mail a@b.co"}]}
        response = await http.post("/v1/chat/completions", json=body, headers=bearer(secret))
        assert response.status_code == 200, response.text
        assert upstream.seen[-1].body["messages"][0]["content"] == "mail [REDACTED:email]"

    async def test_fail_open_sends_unmasked_with_a_warning(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, engine: AsyncEngine
    ):
        tenant = await create_tenant(http)
        await _store_slow_rule(engine, tenant, "open")
        secret = (await create_key(http, tenant))["secret"]
        text = "a@b.co " + "a" * 20_000 + "!"
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
        response = await http.post("/v1/chat/completions", json=body, headers=bearer(secret))
        assert response.status_code == 200, response.text
        assert response.headers["x-tollgate-shield"].startswith("unmasked")
        assert upstream.seen[-1].body["messages"][0]["content"] == text

    async def test_messages_fail_closed_in_anthropic_shape(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic, engine: AsyncEngine
    ):
        tenant = await create_tenant(every_http)
        await _store_slow_rule(engine, tenant, "closed")
        secret = (await create_key(every_http, tenant))["secret"]
        body = {"model": "claude-sonnet-4", "max_tokens": 50,
                "messages": [{"role": "user", "content": "a" * 20_000 + "!"}]}  # fmt: skip
        response = await every_http.post("/v1/messages", json=body, headers=bearer(secret))
        assert response.status_code == 422, response.text
        assert response.json()["type"] == "error"
        assert claude.seen == []


class TestShieldTestEndpoint:
    async def test_saved_settings_or_the_given_ones(self, http: httpx.AsyncClient):
        shield = {"shield": {"presets": ["email"], "rules": [
            {"name": "ticket", "pattern": r"\bTCK-\d+"}]}}  # fmt: skip
        tenant, _ = await _tenant(http, settings=shield)
        text = "TCK-1 a@b.co AKIAIOSFODNN7EXAMPLE"
        response = await http.post("/v1/shield/test", json={"text": text}, headers=tenant.headers)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "object": "shield_test",
            "masked": "[REDACTED:ticket] [REDACTED:email] AKIAIOSFODNN7EXAMPLE",
            "matches": [{"name": "ticket", "start": 0, "end": 5},
                        {"name": "email", "start": 6, "end": 12}],
        }  # fmt: skip
        rule = {"name": "t", "pattern": r"TCK", "mask": "keep_prefix", "keep": 1}
        given = {"text": text, "presets": ["aws_access_key_id"], "rules": [rule]}
        response = await http.post("/v1/shield/test", json=given, headers=tenant.headers)
        assert response.json()["masked"] == "T**-1 a@b.co [REDACTED:aws_access_key_id]"

    async def test_rules_are_validated_like_on_save(self, http: httpx.AsyncClient):
        tenant = await create_tenant(http)
        given = {"text": "x", "rules": [{"name": "slow", "pattern": r"(a|aa)+$"}]}
        response = await http.post("/v1/shield/test", json=given, headers=tenant.headers)
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "rules[0].pattern"

    async def test_master_key_only(self, http: httpx.AsyncClient):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        response = await http.post(
            "/v1/shield/test", json={"text": "a@b.co"}, headers=bearer(key["secret"])
        )
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "insufficient_scope"

    async def test_through_the_sdk(self, http: httpx.AsyncClient, gateway_url: str):
        tenant = await create_tenant(http)
        async with tollgate.AsyncTollgate(
            api_key=tenant.master_key, base_url=gateway_url, max_retries=0
        ) as client:
            rule: tollgate.types.ShieldRuleParam = {"name": "ticket", "pattern": r"\bTCK-\d+"}
            saved = await client.settings.update(
                shield={"enabled": True, "presets": ["email"], "rules": [rule]}
            )
            assert saved.shield is not None
            assert saved.shield.rules[0].name == "ticket"
            tested = await client.settings.test_shield("TCK-1 a@b.co")
            assert tested.masked == "[REDACTED:ticket] [REDACTED:email]"
            assert [(m.name, m.start, m.end) for m in tested.matches] == [
                ("ticket", 0, 5),
                ("email", 6, 12),
            ]
            tested = await client.settings.test_shield("TCK-1 a@b.co", rules=[], presets=[])
            assert tested.masked == "TCK-1 a@b.co"
            with pytest.raises(tollgate.BadRequestError):
                await client.settings.update(shield={"rules": [{"name": "x", "pattern": "("}]})
