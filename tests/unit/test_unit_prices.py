"""Per-unit prices (SPEC §5.12): the catalog's table and its TOML overrides, the cost of each
unit, the worst cases of the endpoints' requests and how a limit of each unit metric counts."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from api.auth.limits import Limit
from api.gateway.budget import Demand, actual, affordable_output, worst_case
from api.gateway.cache import CHAT, MESSAGES, RESPONSES, complete
from api.gateway.catalog import Catalog
from api.gateway.dialects.openai.embeddings import _usage_at_the_end
from api.gateway.pricing import FREE, Price, Usage, cost_micros
from api.kit.audio import LOWEST_BITRATE, duration_seconds, worst_seconds
from tests.factories.audio import tone_wav

CATALOG = Catalog.build()


def price(model: str) -> Price:
    return CATALOG.resolve(model).entry.price


def usd(value: str) -> int:
    return math.ceil(Decimal(value) * 1_000_000)


class TestCosts:
    def test_each_unit_at_its_list_price(self):
        assert cost_micros(Usage(audio_seconds=60), price("whisper-1")) == usd("0.006")
        assert cost_micros(Usage(characters=1_000), price("tts-1")) == usd("0.015")
        assert cost_micros(Usage(characters=1_000), price("tts-1-hd")) == usd("0.030")
        hd = price("dall-e-3").image("hd", "1792x1024")
        assert hd == usd("0.12")
        assert cost_micros(Usage(images=3, image_price=hd), price("dall-e-3")) == usd("0.36")
        assert cost_micros(Usage(input_tokens=1_000_000), price("text-embedding-3-small")) == (
            usd("0.02")
        )

    def test_audio_and_image_tokens_at_their_own_price(self):
        heard = Usage(input_tokens=1_100, media_input_tokens=1_000, output_tokens=50)
        # 100 text tokens at $2.50, 1,000 audio tokens at $6, 50 output tokens at $10 per 1M.
        expected = (100 * Decimal("2.50") + 1_000 * Decimal(6) + 50 * Decimal(10)) / 10**6
        assert cost_micros(heard, price("gpt-4o-transcribe")) == usd(str(expected))
        spoken = Usage(input_tokens=10, output_tokens=2_000, media_output_tokens=2_000)
        expected = (10 * Decimal("0.60") + 2_000 * Decimal(12)) / 10**6
        assert cost_micros(spoken, price("gpt-4o-mini-tts")) == usd(str(expected))

    def test_a_test_key_pays_nothing_for_any_unit(self):
        free = Usage(audio_seconds=99, characters=99, images=2, input_tokens=5)
        assert cost_micros(free, FREE) == 0

    def test_the_dearest_image_when_the_provider_chooses(self):
        table = price("gpt-image-1")
        assert table.dearest_image("auto", "auto") == usd("0.25")
        assert table.dearest_image("low", None) == usd("0.016")
        assert table.dearest_image(None, "1024x1024") == usd("0.167")
        assert table.dearest_image("ultra", None) is None


class TestOverrides:
    def test_per_unit_prices_and_kinds_come_from_toml(self):
        catalog = Catalog.build({
            "whisper-1": {"per_second": 50},
            "dall-e-2": {"images": [{"size": "256x256", "price": 1}]},
            "my-tts": {"provider": "openai", "kind": "speech", "per_character": 7},
        })  # fmt: skip
        assert catalog.resolve("whisper-1").entry.price.per_second == 50
        assert catalog.resolve("whisper-1").entry.kind == "transcription"
        assert catalog.resolve("dall-e-2").entry.price.image("standard", "256x256") == 1
        mine = catalog.resolve("my-tts").entry
        assert (mine.kind, mine.price.per_character, mine.max_output_tokens) == ("speech", 7, 0)

    @pytest.mark.parametrize(
        ("fields", "said"),
        [
            ({"provider": "openai", "kind": "video", "per_second": 1}, "kind must be one of"),
            ({"provider": "openai", "kind": "speech"}, "needs a price"),
            ({"provider": "openai", "kind": "speech", "per_character": -1}, "negative"),
            ({"provider": "openai", "kind": "image", "images": []}, "images must be a list"),
            ({"provider": "openai", "kind": "image", "images": [{"size": "1x1"}]}, "negative"),
            ({"provider": "openai", "input": 1}, "input and output prices"),
        ],
    )
    def test_bad_entries_stop_start_up(self, fields, said):
        with pytest.raises(ValueError, match=said):
            Catalog.build({"new-model": fields})


class TestWorstCases:
    def test_a_unit_demand_is_held_exactly_and_never_clamped(self):
        worst = Usage(audio_seconds=30)
        demand = Demand.of_usage(worst, price("whisper-1"))
        seconds = Limit("audio_seconds", "month", 10)
        spend = Limit("spend_usd", "month", 10_000)
        assert worst_case(seconds, demand, 0) == 30
        assert affordable_output(seconds, 10, demand) < 1
        assert affordable_output(seconds, 30, demand) > 0
        assert worst_case(spend, demand, 0) == 3_000
        assert affordable_output(spend, 2_999, demand) < 1
        assert not demand.clamp

    def test_limits_count_what_was_used(self):
        used = Usage(audio_seconds=7, characters=11, images=2)
        for metric, value in (("audio_seconds", 7), ("characters", 11), ("images", 2)):
            assert actual(Limit(metric, "day", 100), used, 0, True) == value  # type: ignore[arg-type]
        chat = Demand(100, 50, price("gpt-4o"))
        assert worst_case(Limit("images", "day", 1), chat, 50) == 0  # chat uses no images


class TestDurations:
    def test_a_wav_lasts_what_its_header_says(self):
        assert duration_seconds(tone_wav(2.0)) == pytest.approx(2.0, abs=0.01)
        assert worst_seconds(tone_wav(2.0), 1_000_000) == 2

    def test_unreadable_audio_is_held_at_the_upload_limit(self):
        noise = bytes(range(256)) * 10
        assert duration_seconds(noise) is None
        assert worst_seconds(noise, 25 * 1024 * 1024) == math.ceil(
            25 * 1024 * 1024 * 8 / LOWEST_BITRATE
        )


class TestEmbeddingAnswers:
    """OpenAI's embeddings answer is read at its end only (its vectors are most of it)."""

    @pytest.mark.parametrize(
        ("raw", "tokens"),
        [
            (b'{"data":[{"embedding":[0.1]}],"model":"m","usage":{"prompt_tokens":5}}', 5),
            (b'{\n "data": [],\n "usage": {\n  "prompt_tokens": 7,\n  "total_tokens": 7\n }\n}', 7),
            (b'{"usage":{"prompt_tokens":5},"model":"m"}', None),  # not last: parsed whole
            (b'{"data":[],"usage":{"prompt_tokens":-1}}', None),
            (b'[{"usage":{"prompt_tokens":5}}]', None),
            (b'{"data":[]}', None),
            (b'{"usage":{"prompt_tokens":5}', None),
        ],
    )
    def test_usage_is_read_from_the_end_or_not_at_all(self, raw: bytes, tokens: int | None):
        assert _usage_at_the_end(raw) == tokens


def _mp3(frames: int, *, xing_frames: int | None = None) -> bytes:
    """MPEG-1 Layer III frames (128 kbit/s, 44.1 kHz: 417 bytes, 26 ms each); the first can
    carry a Xing header claiming `xing_frames` frames."""
    header = bytes([0xFF, 0xFB, 0x90, 0x64])
    frame = header + bytes(413)
    if xing_frames is None:
        return frame * frames
    first = header + bytes(32) + b"Xing" + (1).to_bytes(4, "big") + xing_frames.to_bytes(4, "big")
    return first + bytes(417 - len(first)) + frame * (frames - 1)


class TestCompressedAudio:
    def test_a_header_that_claims_one_frame_does_not_shrink_the_hold(self):
        plays = 300 * 1152 / 44_100  # 7.8 s of frames
        lying = _mp3(300, xing_frames=1)
        assert duration_seconds(lying) >= plays
        assert duration_seconds(_mp3(300)) >= plays


class TestCompleteAnswers:
    """Only answers that ended for good are stored (`api/gateway/cache.py`)."""

    def test_streams_whose_every_answer_finished(self):
        chat = b'data: {"choices":[{"index":0,"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
        assert complete(CHAT, True, chat)
        two = (
            b'data: {"choices":[{"index":0,"finish_reason":"stop"}]}\n\n'
            b'data: {"choices":[{"index":1,"finish_reason":"length"}]}\n\ndata: [DONE]\n\n'
        )
        assert not complete(CHAT, True, two)
        assert not complete(CHAT, True, chat.replace(b"data: [DONE]\n\n", b""))
        done = (
            b'event: message_delta\ndata: {"delta":{"stop_reason":"%s"}}\n\nevent: message_stop\n'
        )
        assert complete(MESSAGES, True, done % b"end_turn")
        for reason in (b"max_tokens", b"pause_turn", b"refusal"):
            assert not complete(MESSAGES, True, done % reason)

    def test_plain_answers(self):
        assert complete(CHAT, False, b'{"choices":[{"finish_reason":"tool_calls"}]}')
        assert not complete(CHAT, False, b'{"choices":[{"finish_reason":"content_filter"}]}')
        assert not complete(MESSAGES, False, b'{"type":"message","stop_reason":"refusal"}')
        assert complete(RESPONSES, False, b'{"status":"completed"}')
        assert not complete(RESPONSES, False, b'{"status":"incomplete"}')
