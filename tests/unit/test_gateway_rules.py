"""Pure parts of the proxy: prices, catalog, usage normalisation, SSE framing, counters."""

from __future__ import annotations

import pytest

from api.auth.limits import Limit
from api.errors import InvalidModel
from api.gateway import usage as usage_rules
from api.gateway.budget import Demand, affordable_output, worst_case
from api.gateway.catalog import Catalog
from api.gateway.pricing import Price, Usage, cost_micros
from api.gateway.sse import SSEEvent, parse_sse
from api.kit.counters import HoldRequest, MemoryCounterStore, Settlement, Unseeded


class TestCost:
    def test_rounds_up_once_per_request(self):
        price = Price(input=150_000, cached_input=75_000, output=600_000)  # gpt-4o-mini
        assert cost_micros(Usage(input_tokens=1), price) == 1  # 0.15 micro-USD → 1
        assert cost_micros(Usage(input_tokens=1000, output_tokens=1000), price) == 750
        assert cost_micros(Usage(), price) == 0

    def test_cached_tokens_are_a_subset_of_input(self):
        price = Price(input=2_500_000, cached_input=1_250_000, output=10_000_000)
        usage = Usage(input_tokens=2417, cached_input_tokens=2304, output_tokens=1093)
        assert cost_micros(usage, price) == 14093  # ceil(14092.5)
        overclaimed = Usage(input_tokens=10, cached_input_tokens=50)
        assert cost_micros(overclaimed, price) == cost_micros(
            Usage(input_tokens=10, cached_input_tokens=10), price
        )


class TestCatalog:
    catalog = Catalog.build()

    def test_family_alias_dated_and_explicit(self):
        assert self.catalog.resolve("gpt-4o").provider == "openai"
        dated = self.catalog.resolve("gpt-4o-mini-2024-07-18")
        assert (dated.entry.id, dated.upstream_model) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
        alias = self.catalog.resolve("claude-sonnet-4")
        assert alias.upstream_model == "claude-sonnet-4-20250514"
        explicit = self.catalog.resolve("deepseek/deepseek-chat")
        assert (explicit.provider, explicit.upstream_model) == ("deepseek", "deepseek-chat")

    def test_listed_prices_include_cache_writes_and_searches(self):
        claude = self.catalog.resolve("claude-sonnet-4").entry.price.as_json()
        assert claude == {
            "input": 3_000_000, "cached_input": 300_000, "output": 15_000_000,
            "cache_write": 3_750_000, "web_search": 10_000,  # $10 per 1,000 searches
        }  # fmt: skip
        gpt = self.catalog.resolve("gpt-4o").entry.price.as_json()
        assert (gpt["cache_write"], gpt["web_search"]) == (gpt["input"], 0)

    @pytest.mark.parametrize("model", ["gpt-9", "nope/gpt-4o", "gemini/gpt-4o", ""])
    def test_unknown(self, model: str):
        with pytest.raises(InvalidModel):
            self.catalog.resolve(model)

    def test_config_overrides_and_adds_models(self):
        catalog = Catalog.build(
            {
                "gpt-4o": {"input": 1, "output": 2},
                "my-llama": {"provider": "openai", "input": 100_000, "output": 200_000},
            }
        )
        assert catalog.resolve("gpt-4o").entry.price == Price(1, 1_250_000, 2)
        added = catalog.resolve("my-llama").entry
        assert added.price == Price(100_000, 100_000, 200_000)
        with pytest.raises(ValueError, match="provider"):
            Catalog.build({"mystery": {"input": 1, "output": 1}})
        with pytest.raises(ValueError, match="negative"):
            Catalog.build({"gpt-4o": {"input": -1}})


class TestUsage:
    def test_openai_and_deepseek_shapes(self):
        openai = usage_rules.from_openai(
            {
                "prompt_tokens": 2417, "completion_tokens": 1093,
                "prompt_tokens_details": {"cached_tokens": 2304},
                "completion_tokens_details": {"reasoning_tokens": 896},
            }
        )  # fmt: skip
        assert openai == Usage(2417, 2304, 1093, 896)
        deepseek = usage_rules.from_openai(
            {"prompt_tokens": 1854, "completion_tokens": 96, "prompt_cache_hit_tokens": 1792}
        )
        assert deepseek.cached_input_tokens == 1792
        assert usage_rules.from_openai({"prompt_tokens": None, "completion_tokens": "x"}) == Usage()

    def test_delta_text_is_what_a_relayed_chunk_said(self):
        chunks = [
            b'{"choices":[{"index":0,"delta":{"content":"Hello"}}]}',
            b'{"choices":[{"index":0,"delta":{"content":" world"}}]}',
            b"not json",
        ]
        assert "".join(usage_rules.delta_text(chunk) for chunk in chunks) == "Hello world"


async def _lines(*parts: bytes):
    for part in parts:
        yield part


class TestSSE:
    async def test_lf_crlf_comments_and_multiline(self):
        events = [
            e
            async for e in parse_sse(
                _lines(
                    b": keep-alive\n", b"\n",
                    b"data: {\"a\":1}\r\n", b"\r\n",
                    b"event: message_start\n", b"data: x\n", b"data: y\n", b"\n",
                    b"data:[DONE]\n",
                )
            )
        ]  # fmt: skip
        assert events == [
            SSEEvent(b'{"a":1}'),
            SSEEvent(b"x\ny", b"message_start"),
            SSEEvent(b"[DONE]"),
        ]

    async def test_events_split_anywhere_across_reads(self):
        raw = b': ping\r\n\r\ndata: {"a":1}\r\n\r\nevent: e\ndata: x\n\ndata: [DONE]\n\n'
        for size in (1, 2, 3, 7, len(raw)):
            pieces = [raw[i : i + size] for i in range(0, len(raw), size)]
            events = [e async for e in parse_sse(_lines(*pieces))]
            assert events == [SSEEvent(b'{"a":1}'), SSEEvent(b"x", b"e"), SSEEvent(b"[DONE]")]

    async def test_events_of_one_read_are_marked_to_be_written_together(self):
        """Only events already in hand are marked: the last complete event of a read never
        waits for the next read, whatever is left over from it."""
        reads = [b"data: 1\n\ndata: 2\n\nda", b"ta: 3\n\n: ping\n\n", b"data: 4\n\ndata: 5\n\n"]
        events = [(e.data, e.more) async for e in parse_sse(_lines(*reads))]
        assert events == [(b"1", True), (b"2", False), (b"3", False), (b"4", True), (b"5", False)]


class TestMemoryCounters:
    async def test_seed_once_then_add(self):
        store = MemoryCounterStore()
        assert await store.read(["a"]) == [None]
        await store.add({"a": 5}, {"a": 60})
        assert await store.read(["a"]) == [None]  # no counter yet: the seed will count it
        assert await store.seed("a", 100, 60) == 100
        assert await store.seed("a", 999, 60) == 100  # a second seed is ignored
        await store.add({"a": 1}, {"a": 60})
        assert await store.read(["a"]) == [101]
        await store.delete(["a"])
        assert await store.read(["a"]) == [None]

    async def test_expiry(self):
        store = MemoryCounterStore()
        await store.seed("a", 1, 0)
        assert await store.read(["a"]) == [None]


class TestBudgetMaths:
    price = Price(input=150_000, cached_input=75_000, output=600_000)

    def _demand(self, output: int = 100) -> Demand:
        return Demand(input_tokens=8, max_output_tokens=output, price=self.price)

    def test_worst_case_per_metric(self):
        spend = Limit("spend_usd", "month", 1000)
        assert worst_case(spend, self._demand(), 100) == 62  # ceil(1.2 + 60)
        assert worst_case(Limit("tokens", "day", 1000), self._demand(), 100) == 108
        assert worst_case(Limit("requests", "day", 5), self._demand(), 100) == 1

    def test_affordable_output_inverts_worst_case(self):
        spend = Limit("spend_usd", "month", 1000)
        for room in (2, 26, 62, 1000):
            fits = affordable_output(spend, room, self._demand())
            assert worst_case(spend, self._demand(), fits) <= room
            assert worst_case(spend, self._demand(), fits + 1) > room
        assert affordable_output(spend, 1, self._demand()) == -1  # not even the prompt fits
        assert affordable_output(Limit("tokens", "day", 9), 7, self._demand()) == -1
        assert affordable_output(Limit("requests", "day", 1), 0, self._demand()) == -1
        free = Demand(8, 100, Price(0, 0, 0))
        assert affordable_output(spend, 0, free) > 10**9


class TestHolds:
    async def test_all_or_nothing_and_release(self):
        store = MemoryCounterStore()
        await store.seed("a", 0, 60)
        await store.seed("b", 90, 60)
        far = 2**50
        fits = [HoldRequest("a", 100, 50), HoldRequest("b", 100, 5)]
        assert await store.reserve("h1", fits, far, 60) == (True, [100, 10])
        too_much = [HoldRequest("a", 100, 10), HoldRequest("b", 100, 10)]
        assert await store.reserve("h2", too_much, far, 60) == (False, [50, 5])  # nothing held
        assert await store.reserve("h3", [HoldRequest("a", 100, 50)], far, 60) == (True, [50])
        await store.release([Settlement("a", "h1:50", 20, 60), Settlement("b", "h1:5", 5, 60)])
        assert await store.read(["a", "b"]) == [20, 95]
        assert (await store.reserve("h4", [HoldRequest("a", 100, 30)], far, 60))[0]

    async def test_expired_holds_free_their_room_and_unseeded_counters_are_named(self):
        store = MemoryCounterStore()
        await store.seed("a", 0, 60)
        assert (await store.reserve("dead", [HoldRequest("a", 10, 10)], 1, 60))[0]  # 1970
        assert (await store.reserve("live", [HoldRequest("a", 10, 10)], 2**50, 60))[0]
        with pytest.raises(Unseeded) as missing:
            await store.reserve("x", [HoldRequest("a", 10, 0), HoldRequest("b", 1, 1)], 2**50, 60)
        assert missing.value.index == 1


class TestLongContextPrices:
    def test_a_long_prompt_bills_every_token_at_the_long_context_tier(self):
        pro = Catalog.build().resolve("gemini-2.5-pro").entry.price
        short = Usage(input_tokens=200_000, output_tokens=1_000)
        long = Usage(input_tokens=200_001, output_tokens=1_000)
        assert cost_micros(short, pro) == 200_000 * 125 // 100 + 10_000  # $1.25 / $10
        assert cost_micros(long, pro) == 200_001 * 250 // 100 + 15_000 + 1  # $2.50 / $15

    def test_the_reservation_prices_a_long_prompt_at_the_tier(self):
        pro = Catalog.build().resolve("gemini-2.5-pro").entry.price
        limit = Limit("spend_usd", "month", 10_000_000)
        demand = Demand(input_tokens=300_000, max_output_tokens=1_000, price=pro)
        assert worst_case(limit, demand, 1_000) == 300_000 * 250 // 100 + 15_000


class TestDatedSnapshots:
    def test_a_snapshot_with_its_own_price_is_not_priced_as_its_family(self):
        catalog = Catalog.build()
        old = catalog.resolve("gpt-4o-2024-05-13")
        assert (old.entry.price.input, old.entry.price.output) == (5_000_000, 15_000_000)
        assert old.upstream_model == "gpt-4o-2024-05-13"

    def test_an_unknown_snapshot_is_refused(self):
        with pytest.raises(InvalidModel):
            Catalog.build().resolve("gpt-4o-2023-01-01")
