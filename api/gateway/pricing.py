"""Prices and cost: integer micro-USD per million tokens in, integer micro-USD per request out.

cost = ceil((uncached_input * input + cached_input * cached_input_price
             + cache_write_input * cache_write_price + output * output) / 1e6
             + web_search_requests * web_search)

Cached input (cache reads) and cache-write input are subsets of input (every provider's usage is
normalised to that before billing); reasoning tokens are part of output and billed at the output
price (SPEC §7). Only Anthropic charges extra to write the cache: 1.25x input for 5-minute
writes (`cache_write`; a price without it bills writes as plain input) and 2x input for 1-hour
writes; and per request for its server-side web search (`web_search`, micro-USD per search).
Some models charge more for every token of a request whose prompt is long (Gemini 2.5 Pro and
Claude Sonnet 4 above 200k input tokens): `long_context` holds that tier, chosen by the
request's input tokens (`Price.for_prompt`).

Per-unit prices (SPEC §5.12) add to the same sum: `per_second` of audio transcribed,
`per_character` spoken, `images` by quality and size; audio or image tokens (a subset of
input or output, `Usage.media_input_tokens` / `media_output_tokens`) at `media_input` /
`media_output` per million where a model prices them apart from text (audio heard by
gpt-4o-transcribe, spoken by gpt-4o-mini-tts, images given to gpt-image-1's edits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TOKENS_PER_PRICE_UNIT = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """Micro-USD per million tokens."""

    input: int
    cached_input: int
    output: int
    cache_write: int | None = None  # None: cache writes cost plain input
    web_search: int = 0  # micro-USD per server-side web search (Anthropic's `web_search` tool)
    long_context: LongContext | None = None
    # Per-unit prices in micro-USD (SPEC §5.12); audio or image tokens per million, None: as
    # text.
    per_second: int = 0
    per_character: int = 0
    images: tuple[ImagePrice, ...] = ()
    media_input: int | None = None
    media_output: int | None = None

    def for_prompt(self, input_tokens: int) -> Price:
        """The prices a request with this many input tokens is billed at."""
        tier = self.long_context
        return tier.price if tier is not None and input_tokens > tier.threshold else self

    @property
    def cache_write_input(self) -> int:
        return self.input if self.cache_write is None else self.cache_write

    @property
    def cache_write_1h_input(self) -> int:
        """Anthropic's 1-hour cache writes: twice the input price."""
        return 2 * self.input

    @property
    def media_input_price(self) -> int:
        return self.input if self.media_input is None else self.media_input

    @property
    def media_output_price(self) -> int:
        return self.output if self.media_output is None else self.media_output

    def image(self, quality: str, size: str) -> int | None:
        """Micro-USD for one image of this quality and size; None: the table has no such image."""
        return next(
            (item.micros for item in self.images if item.quality == quality and item.size == size),
            None,
        )

    def dearest_image(self, quality: str | None, size: str | None) -> int | None:
        """The most one image can cost when the quality or size is left to the provider
        (None, or "auto"); None: nothing in the table matches."""
        prices = [
            item.micros
            for item in self.images
            if quality in (None, "auto", item.quality) and size in (None, "auto", item.size)
        ]
        return max(prices) if prices else None

    def as_json(self) -> dict[str, Any]:
        """Per million tokens, except `web_search`: micro-USD per search (0: none billed); the
        per-unit prices appear where the model has them."""
        out: dict[str, Any] = {
            "input": self.input,
            "cached_input": self.cached_input,
            "output": self.output,
            "cache_write": self.cache_write_input,
            "web_search": self.web_search,
        }
        if self.media_input is not None:
            out["media_input"] = self.media_input
        if self.media_output is not None:
            out["media_output"] = self.media_output
        if self.per_second:
            out["per_second"] = self.per_second
        if self.per_character:
            out["per_character"] = self.per_character
        if self.images:
            out["per_image"] = [item.as_json() for item in self.images]
        return out


@dataclass(frozen=True, slots=True)
class ImagePrice:
    """One image of a quality ("" where the model has one) and size, in micro-USD."""

    quality: str
    size: str
    micros: int

    def as_json(self) -> dict[str, Any]:
        return {"quality": self.quality or None, "size": self.size, "price": self.micros}


@dataclass(frozen=True, slots=True)
class LongContext:
    """Above `threshold` input tokens, the whole request is billed at `price`."""

    threshold: int
    price: Price


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
    cache_write_1h_input_tokens: int = 0  # the part of cache writes kept for an hour
    web_search_requests: int = 0
    # Per-unit use (SPEC §5.12): seconds of audio transcribed, characters spoken, images made
    # (at `image_price` micro-USD each: the price of their quality and size).
    audio_seconds: int = 0
    characters: int = 0
    images: int = 0
    image_price: int = 0
    # The audio or image tokens among input and output, where a model prices them apart.
    media_input_tokens: int = 0
    media_output_tokens: int = 0
    fee_micros: int = 0  # a flat charge: what a response cache hit bills

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def cost_micros(usage: Usage, price: Price) -> int:
    price = price.for_prompt(usage.input_tokens)
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    written = min(usage.cache_write_input_tokens, usage.input_tokens - cached)
    hour = min(usage.cache_write_1h_input_tokens, written)
    heard = min(usage.media_input_tokens, usage.input_tokens - cached - written)
    spoken = min(usage.media_output_tokens, usage.output_tokens)
    units = (
        usage.web_search_requests * price.web_search
        + usage.audio_seconds * price.per_second
        + usage.characters * price.per_character
        + usage.images * usage.image_price
        + usage.fee_micros
    )
    numerator = (
        (usage.input_tokens - cached - written - heard) * price.input
        + heard * price.media_input_price
        + cached * price.cached_input
        + (written - hour) * price.cache_write_input
        + hour * price.cache_write_1h_input
        + (usage.output_tokens - spoken) * price.output
        + spoken * price.media_output_price
        + units * TOKENS_PER_PRICE_UNIT
    )
    return -(-numerator // TOKENS_PER_PRICE_UNIT)  # ceiling division in integers
