"""The secret shield's detectors and masking, without servers (api/shield/)."""

from __future__ import annotations

import contextlib
import time

import pytest
from pydantic import ValidationError

from api.shield import engine, presets
from api.shield import service as shield_service
from api.shield.engine import Shield, ShieldTimeout, compile_detectors
from api.shield.schemas import ShieldRule, ShieldSettings, ShieldTestIn

# One sample (or more) per preset, each as it would appear in a prompt.
SAMPLES: dict[str, list[str]] = {
    "aws_access_key_id": ["AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A"],
    "aws_secret_access_key": [],  # needs its context: see test_aws_secret_needs_context
    "openai_key": [
        "sk-proj-Abc123def456GHI789jkl012MNO345pqr678STU901vwx",
        "sk-abcdefghijklmnopqrstuvwxyzABCDEF0123456789abcd",
    ],
    "anthropic_key": ["sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789-ABCDEFGHIJ_klm"],
    "google_api_key": ["AIzaSyA1234567890abcdefghijklmnopqrstuv"],
    "credit_card": [
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "378282246310005",
        "6011000990139424",
    ],
    "email": ["alice.smith+billing@example.co.uk", "bob@mail.example.com"],
    "jwt": [
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    ],
    "phone": [
        "+14155552671",
        "+44 20 7946 0958",
        "(415) 555-2671",
        "415-555-2671",
        "020 7946 0958",
        "06 12 34 56 78",
    ],
}

# Text that looks numeric or key-like but is none of the above: left as it is.
NOT_SECRETS = [
    "Order 1234567890 shipped at 1733590000000 (unix ms) on 2024-12-07 10:30:00.",
    "Version 1.2.3, build 20241207, port 8080, ip 192.168.1.10, pi is 3.14159265358979.",
    "The invoice total is 4111111111111112 cents (not a card: Luhn fails).",
    "The totals were 100 200 300 and 2024 12 07; ISBN 978-3-16-148410-0.",
    "Our task-runner sk-short and the sketch sk-builder are not keys.",
    "Ask me at the front desk; email us later. Call extension 4521.",
    "A UUID 123e4567-e89b-12d3-a456-426614174000 and a hash 9f86d081884c7d659a2feaa0c55ad015.",
]


def _shield(**kwargs: object) -> Shield:
    return Shield(compile_detectors(presets.PRESET_NAMES, []), **kwargs)  # type: ignore[arg-type]


class TestLuhn:
    @pytest.mark.parametrize(
        "number", ["4111111111111111", "79927398713", "378282246310005", "0", "18"]
    )
    def test_valid(self, number: str):
        assert presets.luhn(number)

    @pytest.mark.parametrize("number", ["4111111111111112", "79927398710", "1234", "12a4", ""])
    def test_invalid(self, number: str):
        assert not presets.luhn(number)

    def test_card_numbers_need_an_issuer_and_its_length(self):
        assert presets.card_number("4111-1111-1111-1111")
        assert presets.card_number("4111 1111 1111 1111")
        assert not presets.card_number("79927398713")  # Luhn-valid, too short for a card
        assert not presets.card_number("1111111111111117")  # Luhn-valid, no issuer starts 1
        assert not presets.card_number("37828224631000")  # Amex prefix, wrong length


class TestPresets:
    @pytest.mark.parametrize(
        ("name", "sample"),
        [(name, sample) for name, samples in SAMPLES.items() for sample in samples],
    )
    def test_each_sample_is_masked_as_its_preset(self, name: str, sample: str):
        text = f"before {sample} after"
        masked, matches = _shield().mask_text(text)
        assert masked == f"before [REDACTED:{name}] after"
        assert [(m.name, text[m.start : m.end]) for m in matches] == [(name, sample)]

    @pytest.mark.parametrize("text", NOT_SECRETS)
    def test_non_secrets_pass_untouched(self, text: str):
        assert _shield().mask_text(text) == (text, [])

    def test_aws_secret_needs_context(self):
        secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        shield = _shield()
        assert shield.mask_text(f"blob {secret} blob")[0] == f"blob {secret} blob"
        for before in (
            "aws_secret_access_key = ",
            'AWS_SECRET_ACCESS_KEY="',
            "secret access key: ",
        ):
            masked, matches = shield.mask_text(before + secret)
            assert masked == before + "[REDACTED:aws_secret_access_key]"
            assert matches[0].name == "aws_secret_access_key"
        masked, _ = shield.mask_text(f"AKIAIOSFODNN7EXAMPLE,{secret}")
        assert masked == "[REDACTED:aws_access_key_id],[REDACTED:aws_secret_access_key]"

    def test_anthropic_keys_are_not_named_openai(self):
        masked, _ = _shield().mask_text("sk-ant-admin01-abcdefghijklmnopqrstuvwxyz012345")
        assert masked == "[REDACTED:anthropic_key]"

    def test_keys_inside_longer_tokens_and_base64_are_left(self):
        text = "xAKIAIOSFODNN7EXAMPLE AIzaSyA1234567890abcdefghijklmnopqrstuvWXYZ"
        assert _shield().mask_text(text)[0] == text

    def test_only_the_named_presets_run(self):
        shield = Shield(compile_detectors(["email"], []))
        masked, _ = shield.mask_text("a@b.co AKIAIOSFODNN7EXAMPLE")
        assert masked == "[REDACTED:email] AKIAIOSFODNN7EXAMPLE"

    def test_every_preset_is_named_in_the_settings_schema(self):
        assert ShieldSettings().presets == list(presets.PRESET_NAMES)


class TestMaskFormats:
    def _one(self, mask: str, keep: int, text: str) -> str:
        rule = {"name": "ticket", "pattern": r"TCK-\d+", "mask": mask, "keep": keep}
        return Shield(compile_detectors([], [rule])).mask_text(text)[0]

    def test_full(self):
        assert self._one("full", 0, "see TCK-123456.") == "see [REDACTED:ticket]."

    def test_keep_prefix(self):
        assert self._one("keep_prefix", 4, "see TCK-123456.") == "see TCK-******."

    def test_keep_suffix(self):
        assert self._one("keep_suffix", 3, "see TCK-123456.") == "see *******456."

    def test_never_more_than_half_is_kept(self):
        assert self._one("keep_prefix", 64, "TCK-12") == "TCK***"
        assert self._one("keep_suffix", 64, "TCK-12") == "***-12"

    def test_a_secret_group_masks_only_that_group(self):
        rule = {"name": "pin", "pattern": r"pin: (?P<secret>\d{4})"}
        masked, matches = Shield(compile_detectors([], [rule])).mask_text("my pin: 1234!")
        assert masked == "my pin: [REDACTED:pin]!"
        assert (matches[0].start, matches[0].end) == (8, 12)

    def test_overlaps_the_first_then_longest_wins_and_rules_win_ties(self):
        rule = {"name": "corp_mail", "pattern": r"[a-z]+@corp\.example"}
        shield = Shield(compile_detectors(["email"], [rule]))
        masked, matches = shield.mask_text("to ann@corp.example and bo@x.org")
        assert masked == "to [REDACTED:corp_mail] and [REDACTED:email]"
        assert [m.name for m in matches] == ["corp_mail", "email"]


class TestBodies:
    def test_every_string_is_masked_and_the_original_kept(self):
        body = {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "key AKIAIOSFODNN7EXAMPLE"},
                {"role": "user", "content": [{"type": "text", "text": "mail a@b.co"}]},
                {"role": "tool", "tool_call_id": "c1", "content": '{"card": "4111111111111111"}'},
            ],
            "contents": [{"parts": [{"functionResponse": {"response": {"x": "bo@x.org"}}}]}],
            "temperature": 0.5,
        }
        masked, count = _shield().mask_body(body)
        assert count == 4
        assert masked["messages"][0]["content"] == "key [REDACTED:aws_access_key_id]"
        assert masked["messages"][1]["content"][0]["text"] == "mail [REDACTED:email]"
        assert masked["messages"][2]["content"] == '{"card": "[REDACTED:credit_card]"}'
        part = masked["contents"][0]["parts"][0]
        assert part["functionResponse"]["response"]["x"] == "[REDACTED:email]"
        assert body["messages"][0]["content"] == "key AKIAIOSFODNN7EXAMPLE"  # not modified
        assert masked["temperature"] == 0.5

    def test_nothing_to_mask_returns_the_same_object(self):
        body = {"messages": [{"role": "user", "content": "hello there"}]}
        assert _shield().mask_body(body) == (body, 0)
        assert _shield().mask_body(body)[0] is body

    def test_media_and_signatures_are_not_text(self):
        blob = "AKIAIOSFODNN7EXAMPLE a@b.co " * 3
        body = {
            "a": {"inlineData": {"mimeType": "image/png", "data": blob}},
            "b": {"type": "image_url", "image_url": {"url": "data:image/png;base64," + blob}},
            "c": {"type": "thinking", "thinking": "ok", "signature": blob},
        }
        assert _shield().mask_body(body)[0] is body

    def test_only_the_body_model_field_is_left_alone(self):
        body = {"model": "a@b.co-model", "tool": {"args": {"model": "ann@x.org"}}}
        masked, _ = _shield().mask_body(body)
        assert masked["model"] == "a@b.co-model"
        assert masked["tool"]["args"]["model"] == "[REDACTED:email]"

    async def test_large_bodies_are_masked_off_the_event_loop(self):
        text = "mail a@b.co " + "prose " * (engine.OFFLOAD_CHARS // 6)
        body = {"messages": [{"role": "user", "content": text}]}
        assert engine.text_size(body, engine.OFFLOAD_CHARS) >= engine.OFFLOAD_CHARS
        masked, count = await _shield().mask_body_async(body)
        assert count == 1
        assert masked["messages"][0]["content"].startswith("mail [REDACTED:email] prose")
        small = {"messages": [{"role": "user", "content": "mail a@b.co"}]}
        assert (await _shield().mask_body_async(small))[1] == 1


class TestTimeouts:
    def test_a_slow_pattern_times_out(self):
        rule = {"name": "slow", "pattern": r"(a|aa)+$"}
        shield = Shield(compile_detectors([], [rule]), match_timeout=0.02)
        started = time.perf_counter()
        with pytest.raises(ShieldTimeout) as caught:
            shield.mask_text("a" * 5000 + "!")
        assert caught.value.detector == "slow"
        assert time.perf_counter() - started < 1.0

    async def test_a_slow_pattern_times_out_in_the_worker_thread_too(self):
        rule = {"name": "slow", "pattern": r"(a|aa)+$"}
        shield = Shield(compile_detectors([], [rule]), match_timeout=0.02)
        body = {"input": "a" * engine.OFFLOAD_CHARS + "!"}
        started = time.perf_counter()
        with pytest.raises(ShieldTimeout):
            await shield.mask_body_async(body)
        assert time.perf_counter() - started < 1.0

    def test_the_body_budget_bounds_the_whole_body(self):
        shield = _shield(budget=-1.0)
        with pytest.raises(ShieldTimeout):
            shield.mask_body({"messages": [{"content": "text a@b.co"}]})

    def test_a_stored_rule_that_does_not_compile_cannot_complete(self):
        shield = shield_service.build({"rules": [{"name": "bad", "pattern": "("}]})
        assert shield.broken is not None
        with pytest.raises(ShieldTimeout):
            shield.mask_text("anything")


class TestValidation:
    @pytest.mark.parametrize(
        ("pattern", "why"),
        [
            ("(", "not a valid regular expression"),
            ("a*", "matches the empty string"),
            ("x" * 1001, "at most 1000 characters"),
            (r"(a|aa)+$", "catastrophic backtracking"),
            (r"(a|a)+b", "catastrophic backtracking"),
            (r"^(([a-z])+.)+[A-Z]([a-z])+$", "catastrophic backtracking"),
            (r"[a-z]+\d", "catastrophic backtracking"),  # quadratic on a long run of letters
        ],
    )
    def test_bad_patterns_are_refused(self, pattern: str, why: str):
        problem = engine.check_pattern(pattern)
        assert problem is not None
        assert why in problem

    @pytest.mark.parametrize(
        "pattern", [r"\bACME-\d{6}\b", r"(?i)project\s+falcon", r"sk-[a-z]+", r"\b[a-z]+\d"]
    )
    def test_ordinary_patterns_pass(self, pattern: str):
        assert engine.check_pattern(pattern) is None

    def test_the_nested_quantifier_classic_is_refused_or_time_bounded(self):
        problem = engine.check_pattern(r"(a+)+$")
        if problem is None:  # `regex` may handle it: then it must stay fast on hostile input
            shield = Shield(compile_detectors([], [{"name": "n", "pattern": r"(a+)+$"}]))
            started = time.perf_counter()
            with contextlib.suppress(ShieldTimeout):
                shield.mask_text("a" * 10_000 + "!")
            assert time.perf_counter() - started < 1.5

    def test_the_settings_name_the_rule_at_fault(self):
        with pytest.raises(ValidationError) as caught:
            ShieldSettings(rules=[{"name": "ok", "pattern": "ok"}, {"name": "b", "pattern": "("}])
        assert caught.value.errors()[0]["loc"] == ("rules", 1, "pattern")

    @pytest.mark.parametrize(
        "rule",
        [
            {"name": "has space", "pattern": "x"},
            {"name": "n", "pattern": "x", "mask": "hash"},
            {"name": "n", "pattern": "x", "keep": 65},
            {"name": "n", "pattern": "x", "extra": 1},
        ],
    )
    def test_rule_fields_are_checked(self, rule: dict[str, object]):
        with pytest.raises(ValidationError):
            ShieldRule(**rule)  # type: ignore[arg-type]

    def test_unknown_presets_are_refused(self):
        with pytest.raises(ValidationError):
            ShieldSettings(presets=["ssn"])  # type: ignore[list-item]


class TestTestEndpointService:
    def test_saved_settings_apply_unless_rules_or_presets_are_given(self):
        saved = {"shield": {"presets": ["email"], "rules": [{"name": "t", "pattern": "TCK-\\d+"}]}}
        text = "TCK-1 a@b.co AKIAIOSFODNN7EXAMPLE"
        out = shield_service.test(saved, ShieldTestIn(text=text))
        assert out.masked == "[REDACTED:t] [REDACTED:email] AKIAIOSFODNN7EXAMPLE"
        assert [(m.name, m.start, m.end) for m in out.matches] == [("t", 0, 5), ("email", 6, 12)]
        out = shield_service.test(saved, ShieldTestIn(text=text, presets=["aws_access_key_id"]))
        assert out.masked == "[REDACTED:t] a@b.co [REDACTED:aws_access_key_id]"
        out = shield_service.test(saved, ShieldTestIn(text=text, rules=[]))
        assert out.masked == "TCK-1 [REDACTED:email] AKIAIOSFODNN7EXAMPLE"

    def test_defaults_are_every_preset(self):
        out = shield_service.test({}, ShieldTestIn(text="AKIAIOSFODNN7EXAMPLE"))
        assert out.masked == "[REDACTED:aws_access_key_id]"

    def test_disabled_shields_load_as_none(self):
        assert shield_service.load({}) is None
        assert shield_service.load({"shield": {"enabled": False}}) is None
        loaded = shield_service.load({"shield": {"enabled": True, "fail": "open"}})
        assert loaded is not None
        assert loaded.fail_open
