"""The model catalog: which provider serves a model id, at what price, with what limits.

Built-in prices come from the providers' published list prices (micro-USD per million tokens);
the TOML config (`[models."<id>"]`) adds models or overrides any field. A model without a known
price is refused (`400 invalid_model`): Tollgate never forwards a request it cannot meter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from api.errors import InvalidModel
from api.gateway.pricing import ImagePrice, LongContext, Price

PROVIDERS = ("openai", "anthropic", "gemini", "deepseek")
# What a model does, and so which endpoints serve it (SPEC §5.2, §5.12).
KINDS = ("chat", "embedding", "transcription", "speech", "image")
# Family patterns from SPEC §5.2, used for error messages and for config entries without a provider.
_FAMILIES = (
    (re.compile(r"^(gpt-|o1|o3|o4|chatgpt-|text-embedding-|whisper-|tts-|dall-e-)"), "openai"),
    (re.compile(r"^claude-"), "anthropic"),
    (re.compile(r"^gemini-"), "gemini"),
    (re.compile(r"^deepseek-"), "deepseek"),
)


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: str
    provider: str
    price: Price
    display_name: str
    context_window: int
    max_output_tokens: int
    tier: str  # "flagship" | "economy": failover pairs like with like
    created: int = 1_700_000_000
    kind: str = "chat"  # one of KINDS


def _search(provider: str) -> int:
    """Micro-USD per server-side web search: Anthropic bills $10 per 1,000."""
    return 10_000 if provider == "anthropic" else 0


def _price(provider: str, prices: tuple[float, float, float], cache_write: float | None) -> Price:
    micros = [round(p * 1_000_000) for p in prices]
    write = None if cache_write is None else round(cache_write * 1_000_000)
    return Price(micros[0], micros[1], micros[2], cache_write=write, web_search=_search(provider))


def _m(
    model_id: str, provider: str, prices: tuple[float, float, float], display: str,
    context: int, max_output: int, tier: str, cache_write: float | None = None,
    above_200k: tuple[float, float, float] | None = None, above_200k_write: float | None = None,
) -> ModelEntry:  # fmt: skip
    price = _price(provider, prices, cache_write)
    if above_200k is not None:  # the long-context tier: every token of the request costs more
        long = LongContext(200_000, _price(provider, above_200k, above_200k_write))
        price = replace(price, long_context=long)
    return ModelEntry(model_id, provider, price, display, context, max_output, tier)


BUILTIN_MODELS: tuple[ModelEntry, ...] = (
    _m("gpt-4o", "openai", (2.50, 1.25, 10.00), "GPT-4o", 128_000, 16_384, "flagship"),
    # The first GPT-4o snapshot kept its launch price (and has no cached-input discount).
    _m("gpt-4o-2024-05-13", "openai", (5.00, 5.00, 15.00), "GPT-4o (2024-05-13)", 128_000,
       4_096, "flagship"),
    _m("gpt-4o-mini", "openai", (0.15, 0.075, 0.60), "GPT-4o mini", 128_000, 16_384, "economy"),
    _m("gpt-4.1", "openai", (2.00, 0.50, 8.00), "GPT-4.1", 1_047_576, 32_768, "flagship"),
    _m("gpt-4.1-mini", "openai", (0.40, 0.10, 1.60), "GPT-4.1 mini", 1_047_576, 32_768, "economy"),
    _m("o3-mini", "openai", (1.10, 0.55, 4.40), "o3-mini", 200_000, 100_000, "flagship"),
    # Anthropic bills 5-minute cache writes at 1.25x input (1-hour writes, 2x, are billed so too).
    # Sonnet 4 with the 1M-context beta bills requests above 200k input tokens at its
    # long-context prices.
    _m("claude-sonnet-4-20250514", "anthropic", (3.00, 0.30, 15.00), "Claude Sonnet 4",
       200_000, 64_000, "flagship", cache_write=3.75, above_200k=(6.00, 0.60, 22.50),
       above_200k_write=7.50),
    _m("claude-opus-4-20250514", "anthropic", (15.00, 1.50, 75.00), "Claude Opus 4",
       200_000, 32_000, "flagship", cache_write=18.75),
    _m("claude-3-5-haiku-20241022", "anthropic", (0.80, 0.08, 4.00), "Claude Haiku 3.5",
       200_000, 8_192, "economy", cache_write=1.00),
    _m("gemini-2.5-pro", "gemini", (1.25, 0.125, 10.00), "Gemini 2.5 Pro", 1_048_576, 65_536,
       "flagship", above_200k=(2.50, 0.25, 15.00)),
    _m("gemini-2.5-flash", "gemini", (0.30, 0.03, 2.50), "Gemini 2.5 Flash", 1_048_576, 65_536,
       "economy"),
    _m("gemini-2.0-flash", "gemini", (0.10, 0.025, 0.40), "Gemini 2.0 Flash", 1_048_576, 8_192,
       "economy"),
    _m("deepseek-chat", "deepseek", (0.28, 0.028, 0.42), "DeepSeek V3.2", 128_000, 8_192,
       "economy"),
    _m("deepseek-reasoner", "deepseek", (0.28, 0.028, 0.42), "DeepSeek V3.2 (thinking)",
       128_000, 65_536, "economy"),
)  # fmt: skip


def _units(
    model_id: str, provider: str, kind: str, display: str, *, input: float = 0.0,
    output: float = 0.0, media_input: float | None = None, media_output: float | None = None,
    per_second: int = 0, per_character: int = 0,
    images: tuple[tuple[str, str, int], ...] = (), context: int = 8_192, max_output: int = 0,
) -> ModelEntry:  # fmt: skip
    """A model of SPEC §5.12's endpoints: token prices in USD per million, the per-unit ones in
    micro-USD (per second, per character, per image by quality and size)."""

    def micros(usd: float | None) -> int | None:
        return None if usd is None else round(usd * 1_000_000)

    price = Price(
        round(input * 1_000_000), round(input * 1_000_000), round(output * 1_000_000),
        media_input=micros(media_input), media_output=micros(media_output),
        per_second=per_second, per_character=per_character,
        images=tuple(ImagePrice(quality, size, cost) for quality, size, cost in images),
    )  # fmt: skip
    return ModelEntry(model_id, provider, price, display, context, max_output, "economy", kind=kind)


_WIDE = ("1024x1536", "1536x1024")
# OpenAI's image price tables (micro-USD per image); the gpt-image models also bill their
# prompt's text tokens (`input`) and an edit's input images as image tokens (`media_input`).
_GPT_IMAGE_1 = (
    ("low", "1024x1024", 11_000), *(("low", size, 16_000) for size in _WIDE),
    ("medium", "1024x1024", 42_000), *(("medium", size, 63_000) for size in _WIDE),
    ("high", "1024x1024", 167_000), *(("high", size, 250_000) for size in _WIDE),
)  # fmt: skip
_GPT_IMAGE_1_MINI = (
    ("low", "1024x1024", 5_000), *(("low", size, 6_000) for size in _WIDE),
    ("medium", "1024x1024", 11_000), *(("medium", size, 15_000) for size in _WIDE),
    ("high", "1024x1024", 36_000), *(("high", size, 52_000) for size in _WIDE),
)  # fmt: skip
_DALL_E_3 = (
    ("standard", "1024x1024", 40_000), ("standard", "1024x1792", 80_000),
    ("standard", "1792x1024", 80_000), ("hd", "1024x1024", 80_000),
    ("hd", "1024x1792", 120_000), ("hd", "1792x1024", 120_000),
)  # fmt: skip
_DALL_E_2 = (
    ("standard", "256x256", 16_000), ("standard", "512x512", 18_000),
    ("standard", "1024x1024", 20_000),
)  # fmt: skip

UNIT_MODELS: tuple[ModelEntry, ...] = (
    # Embeddings: per input token; `context` is the most tokens one input may have.
    _units("text-embedding-3-small", "openai", "embedding", "Text Embedding 3 Small",
           input=0.02, context=8_192),
    _units("text-embedding-3-large", "openai", "embedding", "Text Embedding 3 Large",
           input=0.13, context=8_192),
    _units("text-embedding-ada-002", "openai", "embedding", "Text Embedding Ada 002",
           input=0.10, context=8_192),
    _units("gemini-embedding-001", "gemini", "embedding", "Gemini Embedding", input=0.15,
           context=2_048),
    # Transcription: whisper-1 per second of audio ($0.006 a minute); the gpt-4o models per
    # token, audio input apart from the text prompt, as OpenAI reports them.
    _units("whisper-1", "openai", "transcription", "Whisper", per_second=100),
    _units("gpt-4o-transcribe", "openai", "transcription", "GPT-4o Transcribe", input=2.50,
           media_input=6.00, output=10.00, context=16_000, max_output=2_000),
    _units("gpt-4o-mini-transcribe", "openai", "transcription", "GPT-4o mini Transcribe",
           input=1.25, media_input=3.00, output=5.00, context=16_000, max_output=2_000),
    # Speech: per input character, or per token (text in, audio out).
    _units("tts-1", "openai", "speech", "TTS-1", per_character=15, context=4_096),
    _units("tts-1-hd", "openai", "speech", "TTS-1 HD", per_character=30, context=4_096),
    _units("gpt-4o-mini-tts", "openai", "speech", "GPT-4o mini TTS", input=0.60,
           media_output=12.00, output=12.00, context=2_000, max_output=16_384),
    # Images: per image by quality and size.
    _units("gpt-image-1", "openai", "image", "GPT Image 1", input=5.00, media_input=10.00,
           images=_GPT_IMAGE_1, context=32_000),
    _units("gpt-image-1-mini", "openai", "image", "GPT Image 1 mini", input=2.00,
           media_input=2.50, images=_GPT_IMAGE_1_MINI, context=32_000),
    _units("dall-e-3", "openai", "image", "DALL·E 3", images=_DALL_E_3, context=4_000),
    _units("dall-e-2", "openai", "image", "DALL·E 2", images=_DALL_E_2, context=1_000),
)  # fmt: skip
# Dated snapshots billed exactly like their family's entry (checked against the providers'
# price lists). A snapshot not listed here nor in the catalog is refused (`invalid_model`):
# snapshots can carry other prices (gpt-4o-2024-05-13 costs twice gpt-4o's).
PRICED_LIKE = {
    "gpt-4o-2024-08-06": "gpt-4o",
    "gpt-4o-2024-11-20": "gpt-4o",
    "gpt-4o-mini-2024-07-18": "gpt-4o-mini",
    "gpt-4.1-2025-04-14": "gpt-4.1",
    "gpt-4.1-mini-2025-04-14": "gpt-4.1-mini",
    "o3-mini-2025-01-31": "o3-mini",
}
ALIASES = {
    "claude-sonnet-4": "claude-sonnet-4-20250514",
    "claude-opus-4": "claude-opus-4-20250514",
    "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022",
}


@dataclass(frozen=True, slots=True)
class Route:
    """A resolved request: the catalog entry and the model name to send upstream."""

    entry: ModelEntry
    provider: str
    upstream_model: str


def family_of(model: str) -> str | None:
    return next((provider for pattern, provider in _FAMILIES if pattern.match(model)), None)


class Catalog:
    def __init__(self, entries: dict[str, ModelEntry], aliases: dict[str, str]) -> None:
        self.entries = entries
        self.aliases = aliases

    @classmethod
    def build(cls, overrides: dict[str, dict[str, Any]] | None = None) -> Catalog:
        entries = {entry.id: entry for entry in (*BUILTIN_MODELS, *UNIT_MODELS)}
        for model_id, fields in (overrides or {}).items():
            entries[model_id] = _apply_override(model_id, entries.get(model_id), fields)
        return cls(entries, dict(ALIASES))

    def lookup(self, model: str) -> ModelEntry | None:
        model = self.aliases.get(model, model)
        entry = self.entries.get(model)
        if entry is None and model in PRICED_LIKE:
            entry = self.entries.get(PRICED_LIKE[model])
        return entry

    def resolve(self, requested: str) -> Route:
        """`model` or `provider/model` → the entry, its provider and the upstream model name."""
        provider, _, name = requested.partition("/")
        if not name:
            provider, name = "", requested
        elif provider not in PROVIDERS:
            raise InvalidModel(
                f"Unknown provider {provider!r} in model {requested!r}; "
                f"use one of {', '.join(PROVIDERS)}.",
                param="model",
            )
        entry = self.lookup(name)
        if entry is None or (provider and entry.provider != provider):
            raise InvalidModel(
                f"The model {requested!r} does not exist or has no price in the catalog.",
                param="model",
            )
        upstream = self.aliases.get(name, name)
        return Route(entry=entry, provider=entry.provider, upstream_model=upstream)


_PRICE_FIELDS = ("input", "cached_input", "output")
_UNIT_FIELDS = ("per_second", "per_character")
_MEDIA_FIELDS = ("media_input", "media_output")


def _apply_override(model_id: str, base: ModelEntry | None, fields: dict[str, Any]) -> ModelEntry:
    """A config entry: prices in micro-USD per million tokens, e.g.
    `[models."gpt-4o"] input = 2500000` (also `cache_write`, the price of a cache write).
    Models of SPEC §5.12's endpoints set `kind` and their per-unit prices in micro-USD:
    `per_second`, `per_character`, `images = [{quality, size, price}]`, and `media_input` /
    `media_output` per million audio or image tokens."""
    provider = fields.get("provider") or (base.provider if base else family_of(model_id))
    if provider not in PROVIDERS:
        raise ValueError(f"models.{model_id}: provider must be one of {', '.join(PROVIDERS)}")
    kind = str(fields.get("kind", base.kind if base else "chat"))
    if kind not in KINDS:
        raise ValueError(f"models.{model_id}: kind must be one of {', '.join(KINDS)}")
    priced = (*_PRICE_FIELDS, *_UNIT_FIELDS, *_MEDIA_FIELDS, "images")
    if base is None and kind == "chat" and not all(name in fields for name in ("input", "output")):
        raise ValueError(f"models.{model_id}: a new model needs input and output prices")
    if base is None and not any(name in fields for name in priced):
        raise ValueError(f"models.{model_id}: a new {kind} model needs a price")
    price_base = base.price if base else Price(0, 0, 0)
    prices = {name: int(fields.get(name, getattr(price_base, name))) for name in _PRICE_FIELDS}
    if "cached_input" not in fields and base is None:
        prices["cached_input"] = prices["input"]
    units = {name: int(fields.get(name, getattr(price_base, name))) for name in _UNIT_FIELDS}
    media = {name: fields.get(name, getattr(price_base, name)) for name in _MEDIA_FIELDS}
    media = {name: None if value is None else int(value) for name, value in media.items()}
    images = price_base.images if "images" not in fields else _images(model_id, fields["images"])
    write = fields.get("cache_write", price_base.cache_write)
    cache_write = None if write is None else int(write)
    given = [*prices.values(), *units.values(), *(v or 0 for v in media.values()), cache_write or 0]
    if any(value < 0 for value in given):
        raise ValueError(f"models.{model_id}: prices cannot be negative")
    template = base or ModelEntry(
        model_id, provider, price_base, model_id, 128_000, 4_096 if kind == "chat" else 0,
        "economy", kind=kind,
    )  # fmt: skip
    return replace(
        template,
        provider=provider,
        kind=kind,
        price=Price(
            **prices,
            cache_write=cache_write,
            web_search=price_base.web_search if base else _search(provider),
            long_context=price_base.long_context,
            **units,
            images=images,
            **media,
        ),
        display_name=str(fields.get("display_name", template.display_name)),
        context_window=int(fields.get("context_window", template.context_window)),
        max_output_tokens=int(fields.get("max_output_tokens", template.max_output_tokens)),
        tier=str(fields.get("tier", template.tier)),
    )


def _images(model_id: str, rows: Any) -> tuple[ImagePrice, ...]:
    """`images = [{quality = "high", size = "1024x1024", price = 167000}, …]`."""
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"models.{model_id}: images must be a list of {{quality, size, price}}")
    out = []
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("size"), str):
            raise ValueError(f"models.{model_id}: each image price needs a size and a price")
        price = int(row.get("price", -1))
        if price < 0:
            raise ValueError(f"models.{model_id}: image prices cannot be negative")
        out.append(ImagePrice(str(row.get("quality") or "standard"), row["size"], price))
    return tuple(out)
