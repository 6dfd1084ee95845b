"""`POST /v1/images/generations` and `/v1/images/edits` in OpenAI's shape (SPEC §5.12).

Priced per image by model, quality and size from the catalog's table; `n` counts. The hold is
`n` images at the dearest price the request's quality and size allow ("auto", or left out
where the model has no default, can be any), plus the gpt-image models' prompt (no token is
shorter than a byte) and, for an edit, IMAGE_INPUT_TOKENS per input image. The bill is the
images the answer carries at the quality and size it reports (else as held), and the tokens
its `usage` reports. The provider's answer (URLs or base64) is passed on as it came.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from api.errors import InvalidRequest
from api.gateway.catalog import ModelEntry
from api.gateway.dialects import entry, translated
from api.gateway.dialects.openai import units
from api.gateway.pipeline import Call
from api.gateway.pricing import Price, Usage
from api.gateway.providers.base import UpstreamRequest
from api.gateway.relay import JSONBody
from api.kit.multipart import FilePart

GENERATIONS_PATH = "/v1/images/generations"
EDITS_PATH = "/v1/images/edits"
MAX_IMAGES = 10  # OpenAI's most per request
# The most tokens one input image of an edit is billed as (gpt-image-1 at high input fidelity
# bills a few thousand; held generously).
IMAGE_INPUT_TOKENS = 10_000
DEFAULT_MODEL = "dall-e-2"  # OpenAI's, when a request names none
# What each model makes when the request does not say (None: the provider decides: any).
_DEFAULTS = {"dall-e-2": ("standard", "1024x1024"), "dall-e-3": ("standard", "1024x1024")}
_FORWARDED = (
    "model", "prompt", "n", "size", "quality", "response_format", "style", "user",
    "background", "moderation", "output_format", "output_compression", "input_fidelity",
)  # fmt: skip
_MAX_UPLOAD = 50 * 1024 * 1024  # OpenAI's limit per image


class ImageRequest:
    """A checked generation or edit: how many images, of what, and what to forward."""

    def __init__(self, fields: dict[str, Any]) -> None:
        model = fields.get("model", DEFAULT_MODEL)
        if not isinstance(model, str) or not model:
            raise InvalidRequest("model: must be a model name.", param="model")
        self.model = model
        prompt = fields.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise InvalidRequest("prompt: a prompt is required.", param="prompt")
        self.prompt = prompt
        n = fields.get("n", 1)
        if isinstance(n, str) and n.isascii() and n.isdecimal() and len(n) <= 3:
            n = int(n)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_IMAGES:
            raise InvalidRequest(f"n: must be an integer from 1 to {MAX_IMAGES}.", param="n")
        self.n = n
        for name in ("size", "quality"):
            if fields.get(name) is not None and not isinstance(fields.get(name), str):
                raise InvalidRequest(f"{name}: must be a string.", param=name)
        self.size: str | None = fields.get("size")
        self.quality: str | None = fields.get("quality")
        if fields.get("stream") not in (None, False, "false"):
            raise InvalidRequest("stream: image streams are not served.", param="stream")
        self.body = {name: fields[name] for name in _FORWARDED if name in fields}
        self.body["n"] = n
        self.unknown = {k: v for k, v in fields.items() if k not in (*_FORWARDED, "stream")}
        self.files: list[FilePart] = []

    @property
    def inputs(self) -> int:
        """Input images of an edit, its mask counted as one (held, not assumed free)."""
        return len(self.files)


def _worst(parsed: ImageRequest, model: ModelEntry, price: Price) -> Usage:
    quality, size = parsed.quality, parsed.size
    default = _DEFAULTS.get(model.id)
    if default is not None:
        quality, size = quality or default[0], size or default[1]
    table = model.price  # the model's own (a test key's prices are all zero)
    if table.dearest_image(quality, size) is None:
        asked = ", ".join(f"{k} {v!r}" for k, v in (("quality", quality), ("size", size)) if v)
        known = sorted({f"{i.quality} {i.size}" for i in table.images})
        raise InvalidRequest(
            f"{model.id} makes no image of {asked or 'this kind'}; it makes: {', '.join(known)}.",
            param="size" if parsed.size else "quality",
        )
    read = len(parsed.prompt.encode())
    shown = parsed.inputs * IMAGE_INPUT_TOKENS
    return Usage(
        input_tokens=read + shown,
        media_input_tokens=shown,
        images=parsed.n,
        image_price=price.dearest_image(quality, size) or 0,
    )


async def _read_generation(request: Request) -> ImageRequest:
    return ImageRequest(await entry.read_json_object(request))


async def _read_edit(request: Request) -> ImageRequest:
    form = await units.read_form(request)
    try:
        fields: dict[str, Any] = {
            name: value for name, value in form.items() if isinstance(value, str)
        }
        parsed = ImageRequest(fields)
        for name in ("image", "image[]", "mask"):
            for upload in form.getlist(name):
                parsed.files.append(await units.file_part(upload, name, _MAX_UPLOAD))
    finally:
        await form.close()
    if not any(part.field != "mask" for part in parsed.files):
        raise InvalidRequest("image: an image to edit is required.", param="image")
    return parsed


@units.router.post(GENERATIONS_PATH)
async def create_image(request: Request) -> Response:
    call, parsed = await units.begin(
        request, GENERATIONS_PATH, _read_generation,
        kind="image", capability="images", worst=_worst,
    )  # fmt: skip
    body = {**parsed.body, "model": call.route.upstream_model}
    return await _answer(call, UpstreamRequest("/images/generations", body, stream=False))


@units.router.post(EDITS_PATH)
async def edit_image(request: Request) -> Response:
    call, parsed = await units.begin(
        request, EDITS_PATH, _read_edit,
        kind="image", capability="images", worst=_worst,
    )  # fmt: skip
    fields = {k: str(v) for k, v in parsed.body.items()}
    fields["model"] = call.route.upstream_model
    upstream = UpstreamRequest("/images/edits", fields, stream=False, files=parsed.files)
    return await _answer(call, upstream)


async def _answer(call: Call, upstream: UpstreamRequest) -> Response:
    async with call.failures_recorded():
        response = await call.provider.send(upstream)
        payload = translated.json_answer(response.body, call.provider.name)
        await call.finish(_usage(payload, call))
    payload["provider"] = call.provider.name
    return JSONBody(orjson.dumps(payload), call.response_headers)


def _usage(payload: dict[str, Any], call: Call) -> Usage:
    """The images the answer carries, at the quality and size it reports (else as held), and
    the tokens it reports (else the prompt as held)."""
    worst = call.worst or Usage()
    data = payload.get("data")
    made = len(data) if isinstance(data, list) else 0
    quality, size = payload.get("quality"), payload.get("size")
    each = worst.image_price
    if isinstance(quality, str) and isinstance(size, str):
        listed = call.price.image(quality, size)
        each = listed if listed is not None else each
    if not call.route.entry.price.input:  # DALL·E: the images alone
        return Usage(images=made, image_price=each)
    usage = payload.get("usage")
    if isinstance(usage, dict):
        return Usage(
            input_tokens=units.reported_int(usage, "input_tokens") or 0,
            media_input_tokens=units.reported_int(usage, "input_tokens_details", "image_tokens")
            or 0,
            images=made,
            image_price=each,
        )
    return Usage(
        input_tokens=worst.input_tokens,
        media_input_tokens=worst.media_input_tokens,
        images=made,
        image_price=each,
        estimated=True,
    )
