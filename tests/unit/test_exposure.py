"""The cost policy per request field (`api/gateway/exposure.py`) and its worst case."""

from __future__ import annotations

import pytest

from api.auth.limits import Limit
from api.errors import InvalidRequest
from api.gateway import exposure
from api.gateway.budget import Demand, affordable_output, worst_case
from api.gateway.catalog import Catalog
from api.gateway.pipeline import demand_for

HELLO = [{"role": "user", "content": "Hello"}]
SPEND = Limit("spend_usd", "month", 10_000_000)


class TestChoices:
    def test_n_multiplies_the_output_held_and_divides_what_fits(self):
        mini = Catalog.build().resolve("gpt-4o-mini").entry
        body = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 100, "n": 4}
        demand = demand_for(body, mini, mini.price, exposure.chat(body))
        assert demand.choices == 4
        one = worst_case(SPEND, demand, 100)
        assert one == -(-(demand.input_tokens * 150_000 + 400 * 600_000) // 1_000_000)
        # What fits is per answer: four answers of it must fit.
        assert affordable_output(SPEND, one, demand) == 100
        tokens = Limit("tokens", "day", 1_000)
        assert affordable_output(tokens, demand.input_tokens + 400, demand) == 100


class TestCacheWrites:
    @pytest.mark.parametrize(("ttl", "rate"), [(None, 3_750_000), ("1h", 6_000_000)])
    def test_a_cache_control_prices_the_prompt_as_written(self, ttl: str | None, rate: int):
        sonnet = Catalog.build().resolve("claude-sonnet-4").entry
        control = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
        body = {"model": "claude-sonnet-4", "max_tokens": 10, "messages": HELLO,
                "system": [{"type": "text", "text": "x", "cache_control": control}]}  # fmt: skip
        demand = demand_for(body, sonnet, sonnet.price, exposure.messages(body))
        assert demand.rates() == (rate, 15_000_000)


class TestServerTools:
    def test_web_search_is_bounded_priced_and_fills_the_window(self):
        sonnet = Catalog.build().resolve("claude-sonnet-4").entry
        tool = {"type": "web_search_20250305", "name": "web_search"}
        body = {"model": "claude-sonnet-4", "max_tokens": 10, "messages": HELLO, "tools": [tool]}
        seen = exposure.messages(body)
        assert exposure.apply(seen, body)["tools"] == [{**tool, "max_uses": 5}]
        demand = demand_for(body, sonnet, sonnet.price, seen)
        assert demand.input_tokens == 200_000
        assert demand.fee_micros == 5 * 10_000

    def test_client_tools_pass_and_unknown_ones_follow_the_policy(self):
        tools = [{"type": "bash_20250124", "name": "bash"}, {"type": "brand_new_1", "name": "n"}]
        body = {"model": "claude-sonnet-4", "messages": HELLO, "tools": tools}
        dropped = exposure.messages(body)
        assert dropped.tools == tools[:1]
        assert "brand_new_1" in dropped.warnings[0]
        assert exposure.messages(body, "pass").tools is None
        with pytest.raises(InvalidRequest):
            exposure.messages(body, "refuse")


class TestUnknownFields:
    def test_dropped_by_default_passed_or_refused_by_setting(self):
        body = {"model": "gpt-4o", "messages": HELLO, "next_years_field": 1, "seed": 3}
        dropped = exposure.chat(body)
        assert exposure.apply(dropped, body) == {"model": "gpt-4o", "messages": HELLO, "seed": 3}
        assert exposure.apply(exposure.chat(body, "pass"), body) == body
        with pytest.raises(InvalidRequest) as refused:
            exposure.chat(body, "refuse")
        assert refused.value.param == "next_years_field"

    @pytest.mark.parametrize("tier", ["auto", "default", "flex"])
    def test_tiers_priced_at_list_price_or_less_pass(self, tier: str):
        assert exposure.chat({"messages": HELLO, "service_tier": tier}).dropped == []


def test_demand_without_exposure_is_prompt_and_output() -> None:
    mini = Catalog.build().resolve("gpt-4o-mini").entry
    demand = demand_for({"messages": HELLO, "max_tokens": 5}, mini, mini.price, None)
    assert demand == Demand(demand.input_tokens, 5, mini.price)


def test_a_field_name_spelled_with_escapes_is_still_seen() -> None:
    # Parsed JSON is what is scanned, never the raw bytes: the escape decodes to the same key.
    import orjson

    raw = (
        b'{"model": "claude-sonnet-4", "messages": [{"role": "user", "content": [{"type": '
        b'"text", "text": "a", "cache\\u005fcontrol": {"type": "ephemeral", "ttl": "1h"}}]}]}'
    )
    assert exposure.messages(orjson.loads(raw)).cache_write == "1h"
