"""Prices and cost: integer micro-USD per million tokens in, integer micro-USD per request out.

cost = ceil((uncached_input * input + cached_input * cached_input_price
             + cache_write_input * cache_write_price + output * output) / 1e6)

Cached input (cache reads) and cache-write input are subsets of input (every provider's usage is
normalised to that before billing); reasoning tokens are part of output and billed at the output
price (SPEC §7). Only Anthropic charges extra to write the cache (1.25x input for 5-minute
writes); a price without `cache_write` bills writes as plain input.
"""

from __future__ import annotations

from dataclasses import dataclass

TOKENS_PER_PRICE_UNIT = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """Micro-USD per million tokens."""

    input: int
    cached_input: int
    output: int
    cache_write: int | None = None  # None: cache writes cost plain input

    @property
    def cache_write_input(self) -> int:
        return self.input if self.cache_write is None else self.cache_write

    def as_json(self) -> dict[str, int]:
        return {"input": self.input, "cached_input": self.cached_input, "output": self.output}


FREE = Price(0, 0, 0)


@dataclass(frozen=True, slots=True)
class Usage:
    """Normalised usage: `input_tokens` includes `cached_input_tokens` (cache reads) and
    `cache_write_input_tokens`; `output_tokens` includes `reasoning_tokens`. `estimated` marks
    counts made by Tollgate (a stream cut off before the provider reported usage) rather than
    reported by the provider."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    cache_write_input_tokens: int = 0  # last: callers build Usage positionally

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def cost_micros(usage: Usage, price: Price) -> int:
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    written = min(usage.cache_write_input_tokens, usage.input_tokens - cached)
    numerator = (
        (usage.input_tokens - cached - written) * price.input
        + cached * price.cached_input
        + written * price.cache_write_input
        + usage.output_tokens * price.output
    )
    return -(-numerator // TOKENS_PER_PRICE_UNIT)  # ceiling division in integers
