"""What the endpoints beyond chat share (SPEC §5.12): embeddings, audio and images.

Each is OpenAI's shape and takes the proxy's one path through `start_call`: a model of its
`kind`, an account with its `capability`, and a worst case it knows before the call, as a usage
(the tokens of an embedding's input, the seconds of an audio file, the characters to speak, the
images by quality and size), reserved exactly: nothing is clamped, and what does not fit is
refused whole (402) before anything is sent upstream. Nothing fails over to another provider
(an embedding's vectors, a voice, an image style are the model's own).

A body refused on the way is a request of its key's, logged at no cost, like chat's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from fastapi import APIRouter, Request
from starlette.datastructures import FormData, UploadFile

from api.deps import gateway_principal
from api.errors import AppError, InvalidRequest, RequestTooLarge
from api.gateway import traces
from api.gateway.catalog import ModelEntry
from api.gateway.pipeline import Call, Gateway, record_refusal, start_call
from api.gateway.pricing import Price, Usage
from api.kit.multipart import FilePart

router = APIRouter(tags=["gateway"])


class Parsed(Protocol):
    """A checked body: its model, the fields to forward, and those the gateway does not know."""

    model: str
    body: dict[str, Any]
    unknown: dict[str, Any]


T = TypeVar("T", bound=Parsed)
# A form's limits: more fields or files than any of these endpoints takes is refused.
_MAX_FIELDS = 50
_MAX_FILES = 16


async def begin(
    request: Request,
    path: str,
    read: Callable[[Request], Awaitable[T]],
    *,
    kind: str,
    capability: str,
    worst: Callable[[T, ModelEntry, Price], Usage],
) -> tuple[Call, T]:
    """Authenticate, read and check the body (`read`), then `start_call` with its worst case.
    Fields the gateway does not know follow `Gateway.unknown_fields`, as chat's do: dropped
    and named in X-Tollgate-Warning, passed on, or refused."""
    timing = traces.of_request(request.state)
    principal = await gateway_principal(request)
    timing.step("auth")
    gateway: Gateway = request.state.gateway
    request_id: str = request.state.request_id
    try:
        parsed = await read(request)
        unknown = sorted(parsed.unknown)
        if unknown and gateway.unknown_fields == "refuse":
            raise InvalidRequest(
                f"{unknown[0]}: not accepted by this gateway: it does not know what this "
                "field costs.",
                param=unknown[0],
            )
    except AppError as error:
        record_refusal(gateway, principal, request_id, path, "", "", error, timing=timing)
        raise
    timing.step("body")
    call = await start_call(
        gateway, principal, request_id, path, parsed.model, {},
        dialects=("openai", "gemini"), kind=kind, capability=capability,
        worst=lambda entry, price: worst(parsed, entry, price), timing=timing,
    )  # fmt: skip
    if unknown and gateway.unknown_fields == "pass":
        parsed.body.update(parsed.unknown)
    elif unknown:
        call.warn([f"dropped unknown fields: {', '.join(unknown)}"])
    return call, parsed


async def read_form(request: Request) -> FormData:
    """A multipart form (the body size limit applies as for any request)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise InvalidRequest(
            "This endpoint takes multipart/form-data (a file upload).", param="content-type"
        )
    try:
        return await request.form(max_files=_MAX_FILES, max_fields=_MAX_FIELDS)
    except AppError:
        raise
    except Exception as exc:  # python-multipart's and Starlette's refusals of a bad form
        if getattr(exc, "status_code", None) == 413:
            raise RequestTooLarge("The request body is too large.") from None
        raise InvalidRequest(f"The multipart form could not be read: {exc}.") from None


def text_field(form: FormData, name: str, *, required: bool = False) -> str | None:
    value = form.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"{name}: this field is required.", param=name)
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name}: must be a text field, not a file.", param=name)
    return value


def number_field(form: FormData, name: str, low: float, high: float) -> float | None:
    value = text_field(form, name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise InvalidRequest(f"{name}: must be a number.", param=name) from None
    if not low <= number <= high:
        raise InvalidRequest(f"{name}: must be between {low:g} and {high:g}.", param=name)
    return number


def bool_field(form: FormData, name: str) -> bool:
    value = text_field(form, name)
    if value is None:
        return False
    if value.lower() not in ("true", "false"):
        raise InvalidRequest(f"{name}: must be true or false.", param=name)
    return value.lower() == "true"


async def file_part(upload: Any, name: str, limit: int) -> FilePart:
    """An uploaded file, read whole (it is forwarded, and may be sent again on a retry)."""
    if not isinstance(upload, UploadFile):
        raise InvalidRequest(f"{name}: must be a file.", param=name)
    if upload.size is not None and upload.size > limit:
        raise RequestTooLarge(f"{name}: the file is over the limit of {limit} bytes.")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise RequestTooLarge(f"{name}: the file is over the limit of {limit} bytes.")
    if not data:
        raise InvalidRequest(f"{name}: the file is empty.", param=name)
    return FilePart(
        name, upload.filename or "upload", upload.content_type or "application/octet-stream", data
    )


def reported_int(payload: Any, *path: str) -> int | None:
    """An integer deep in an upstream's JSON (`usage`, `seconds`), when it is one."""
    for name in path:
        if not isinstance(payload, dict):
            return None
        payload = payload.get(name)
    if isinstance(payload, int) and not isinstance(payload, bool) and payload >= 0:
        return payload
    return None
