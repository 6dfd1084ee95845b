"""`POST /v1/audio/transcriptions`, `/v1/audio/translations` and `/v1/audio/speech` in
OpenAI's shape (SPEC §5.12).

Transcription's worst case is known before the call. The file's duration comes from its
container headers (mutagen), never less than its size at the bitrate those headers state (a
header that understates the length does not shrink the hold). A file whose duration cannot be
read is held at the worst a file of the upload limit can be: `audio_max_bytes` at
LOWEST_BITRATE. whisper-1 is billed per second as OpenAI's `usage` reports them; the gpt-4o
transcribe models per token (audio input apart from the text prompt), held at their context
window and output limit. Plain-text formats (`text`, `srt`, `vtt`) carry no usage, so whisper
is always asked for `verbose_json` (its `duration` and `usage`; a translation's `json` carries
neither) and the client's format is made from it; the gpt-4o models are asked for `json`.

Speech is relayed as it arrives, never buffered whole. tts-1 and tts-1-hd bill per input
character, known before the call. gpt-4o-mini-tts bills per token: its usage comes only in
OpenAI's event stream (`stream_format: "sse"`), so that is what is asked of it; a client that
wants audio bytes gets the events' audio, decoded, as they arrive.
"""

from __future__ import annotations

import asyncio
import base64
import math
from collections.abc import AsyncGenerator
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from api.errors import AppError, InvalidRequest, UpstreamError, openai_body
from api.gateway.catalog import ModelEntry
from api.gateway.dialects import entry, translated
from api.gateway.dialects.openai import units
from api.gateway.pipeline import Call
from api.gateway.pricing import Price, Usage
from api.gateway.providers.base import UpstreamRequest
from api.gateway.relay import EventStream, JSONBody
from api.gateway.sse import SSEEvent, frame
from api.gateway.translate import ir
from api.kit.audio import worst_seconds
from api.kit.multipart import FilePart

TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
TRANSLATIONS_PATH = "/v1/audio/translations"
SPEECH_PATH = "/v1/audio/speech"
FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
_TEXT_TYPES = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}
SPEECH_FORMATS = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
MAX_SPEECH_CHARACTERS = 4_096  # OpenAI's limit


# Transcriptions and translations ---------------------------------------------------------------


class Transcription:
    """A checked form: the file, its worst-case duration, and the fields to forward."""

    def __init__(self, form: FormData, upload: FilePart, limit_bytes: int, translate: bool):
        self.model = units.text_field(form, "model", required=True) or ""
        if not self.model:
            raise InvalidRequest("model: a model name is required.", param="model")
        self.file = upload
        self.format = units.text_field(form, "response_format") or "json"
        if self.format not in FORMATS:
            raise InvalidRequest(
                f"response_format: must be one of {', '.join(FORMATS)}.", param="response_format"
            )
        self.stream = units.bool_field(form, "stream")
        if self.stream and translate:
            raise InvalidRequest("stream: translations do not stream.", param="stream")
        self.prompt = units.text_field(form, "prompt") or ""
        units.number_field(form, "temperature", 0.0, 1.0)
        self.body: dict[str, Any] = {}
        names: tuple[str, ...] = ("prompt", "temperature", "response_format")
        names += () if translate else ("language", "include[]", "timestamp_granularities[]")
        for name in names:
            values = [v for v in form.getlist(name) if isinstance(v, str)]
            if values:  # one value: the last, as checked above (`form.get`)
                self.body[name] = values if name.endswith("[]") else values[-1]
        known = {*names, "model", "file", "stream"}
        self.unknown: dict[str, Any] = {
            name: value for name, value in form.multi_items()
            if name not in known and isinstance(value, str)
        }  # fmt: skip
        self.seconds = 0  # the worst case, read off the event loop
        self.limit_bytes = limit_bytes


async def _read_transcription(request: Request, translate: bool) -> Transcription:
    form = await units.read_form(request)
    gateway = request.state.gateway
    limit = gateway.audio_max_bytes
    try:
        upload = await units.file_part(form.get("file"), "file", limit)
        parsed = Transcription(form, upload, limit, translate)
    finally:
        await form.close()
    parsed.seconds = await asyncio.to_thread(worst_seconds, upload.data, limit)
    return parsed


def _transcription_worst(parsed: Transcription, model: ModelEntry, price: Price) -> Usage:
    del price  # the model's own prices decide its unit (a test key's are all zero)
    if model.price.per_second:
        if parsed.stream:
            raise InvalidRequest(f"stream: {model.id} does not stream.", param="stream")
        return Usage(audio_seconds=parsed.seconds)
    if parsed.format not in ("json", "text"):
        raise InvalidRequest(
            f"response_format: {model.id} answers json or text.", param="response_format"
        )
    # Per token: the whole context window, audio included, at the dearer (audio) price; the
    # output at its limit.
    heard = model.context_window
    return Usage(
        input_tokens=heard, media_input_tokens=heard, output_tokens=model.max_output_tokens
    )


@units.router.post(TRANSCRIPTIONS_PATH)
async def create_transcription(request: Request) -> Response:
    return await _transcribe(request, TRANSCRIPTIONS_PATH, translate=False)


@units.router.post(TRANSLATIONS_PATH)
async def create_translation(request: Request) -> Response:
    return await _transcribe(request, TRANSLATIONS_PATH, translate=True)


async def _transcribe(request: Request, path: str, *, translate: bool) -> Response:
    async def read(request: Request) -> Transcription:
        return await _read_transcription(request, translate)

    call, parsed = await units.begin(
        request, path, read,
        kind="transcription", capability="audio", worst=_transcription_worst,
    )  # fmt: skip
    per_second = bool(call.route.entry.price.per_second)
    asked = parsed.format
    # whisper reports the seconds it bills only in verbose_json (translations never in json):
    # that is what it is asked for, and the client's format is made from it.
    sent = "verbose_json" if per_second else "json" if asked in _TEXT_TYPES else asked
    fields = {**parsed.body, "model": call.route.upstream_model, "response_format": sent}
    if parsed.stream:
        fields["stream"] = "true"
    upstream = UpstreamRequest(
        path.removeprefix("/v1"), fields, stream=parsed.stream, files=[parsed.file]
    )
    if parsed.stream:
        async with call.failures_recorded():
            stream = await call.provider.open_stream(upstream)
        events = translated.relay_events(
            call, stream, _DoneDecoder(b"transcript.text.delta", b"transcript.text.done",
                                       call.worst or Usage()),
            _Verbatim(), ir.ChatRequest(model=call.model, messages=[]),
        )  # fmt: skip
        return EventStream(events, call.response_headers)
    async with call.failures_recorded():
        response = await call.provider.send(upstream)
        payload = translated.json_answer(response.body, call.provider.name)
        usage = _transcription_usage(payload, parsed, call)
        await call.finish(usage)
    if asked == "json" and sent == "verbose_json":
        payload = {"text": payload.get("text", ""), "usage": _reported_usage(usage)}
    if asked in _TEXT_TYPES:
        text = _render(asked, payload)
        return JSONBody(
            text.encode(), call.response_headers, f"{_TEXT_TYPES[asked]}; charset=utf-8"
        )
    return JSONBody(orjson.dumps(payload), call.response_headers)


def _transcription_usage(payload: dict[str, Any], parsed: Transcription, call: Call) -> Usage:
    """What OpenAI's `usage` reports; without it, the worst case that was held."""
    usage = payload.get("usage")
    if isinstance(usage, dict) and usage.get("type") == "duration":
        seconds = units.reported_int(usage, "seconds")
        if seconds is not None:
            return Usage(audio_seconds=seconds)
    if isinstance(usage, dict) and usage.get("type") == "tokens":
        return _token_usage(usage)
    duration = payload.get("duration")  # verbose_json without `usage` (older hosts)
    if isinstance(duration, int | float) and math.isfinite(duration) and duration >= 0:
        return Usage(audio_seconds=max(math.ceil(duration), 0), estimated=True)
    worst = call.worst or Usage(audio_seconds=parsed.seconds)
    return Usage(**{**_fields(worst), "estimated": True})


def _reported_usage(usage: Usage) -> dict[str, Any]:
    """OpenAI's `usage` of a per-second transcription, as billed."""
    return {"type": "duration", "seconds": usage.audio_seconds}


def _token_usage(usage: dict[str, Any]) -> Usage:
    """OpenAI's token usage for audio: input with its audio part, and output."""
    heard = units.reported_int(usage, "input_token_details", "audio_tokens") or 0
    spoken = units.reported_int(usage, "output_token_details", "audio_tokens") or 0
    output = units.reported_int(usage, "output_tokens") or 0
    return Usage(
        input_tokens=units.reported_int(usage, "input_tokens") or 0,
        output_tokens=output,
        media_input_tokens=heard,
        media_output_tokens=spoken,
    )


def _fields(usage: Usage) -> dict[str, Any]:
    return {name: getattr(usage, name) for name in Usage.__dataclass_fields__}


def _render(format: str, payload: dict[str, Any]) -> str:
    """The client's plain-text format from a JSON answer (`verbose_json` has the segments)."""
    text = payload.get("text")
    text = text if isinstance(text, str) else ""
    if format == "text":
        return text + "\n"
    segments = [s for s in payload.get("segments") or [] if isinstance(s, dict)]
    if not segments:
        end = payload.get("duration")
        segments = [{"start": 0.0, "end": end if isinstance(end, int | float) else 0, "text": text}]
    cues = []
    for number, segment in enumerate(segments, 1):
        start, end = _stamp(segment.get("start"), format), _stamp(segment.get("end"), format)
        said = str(segment.get("text", "")).strip()
        cue = f"{start} --> {end}\n{said}\n"
        cues.append(f"{number}\n{cue}" if format == "srt" else cue)
    body = "\n".join(cues)
    return f"WEBVTT\n\n{body}" if format == "vtt" else body


def _stamp(value: Any, format: str) -> str:
    seconds = float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0
    millis = max(round(seconds * 1000), 0)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, millis = divmod(rest, 1000)
    mark = "," if format == "srt" else "."
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{mark}{millis:03d}"


class _DoneDecoder:
    """OpenAI's audio event streams (`transcript.text.*`, `speech.audio.*`) for the one relay:
    text deltas for estimates, the `done` event's usage as the end. `usage` starts at the worst
    case held: a stream cut off before its `done` is billed that, never less."""

    def __init__(self, delta: bytes, done: bytes, held: Usage) -> None:
        self._delta = delta
        self._done = done
        self.usage = held

    def feed(self, event: SSEEvent) -> list[ir.StreamEvent]:
        marks = (self._delta, self._done, b'"error"')
        if not any(mark in event.data for mark in marks):  # audio deltas: nothing to read
            return []
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(data, dict):
            return []
        kind = str(data.get("type", "")).encode()  # by its type, never by what its text says
        if kind == self._delta:
            delta = data.get("delta")
            return [ir.TextDelta(0, delta)] if isinstance(delta, str) else []
        if kind == self._done or kind == b"error" or isinstance(data.get("error"), dict):
            if kind == b"error" or isinstance(data.get("error"), dict):
                error = data.get("error") if isinstance(data.get("error"), dict) else data
                message = error.get("message") if isinstance(error, dict) else None
                return [ir.StreamError("api_error", str(message or "The stream failed."))]
            usage = data.get("usage")
            reported = _token_usage(usage) if isinstance(usage, dict) else self.usage
            return [ir.MessageEnd("end_turn", reported)]
        return []

    def close(self) -> list[ir.StreamEvent]:
        return []


class _Verbatim(translated.ToClient):
    """OpenAI's audio events relayed as they came."""

    def content(self, event: SSEEvent | None, _items: Any) -> bytes:
        return frame(event) if event is not None else b""

    def end(self, event: SSEEvent | None, _items: Any, terminal: Any) -> bytes:
        if event is not None:
            return frame(event)
        error = terminal.error if isinstance(terminal, ir.StreamError) else None
        if isinstance(terminal, ir.MessageEnd):
            return b""
        body = openai_body(error or UpstreamError(getattr(terminal, "message", "") or "failed"))
        return b"data: " + orjson.dumps({"type": "error", **body}) + b"\n\n"


# Speech ----------------------------------------------------------------------------------------


class Speech:
    def __init__(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("model: a model name is required.", param="model")
        self.model = model
        text = body.get("input")
        if not isinstance(text, str) or not text:
            raise InvalidRequest("input: the text to speak is required.", param="input")
        if len(text) > MAX_SPEECH_CHARACTERS:
            raise InvalidRequest(
                f"input: at most {MAX_SPEECH_CHARACTERS} characters.", param="input"
            )
        self.input = text
        voice = body.get("voice")
        if not isinstance(voice, str | dict) or not voice:
            raise InvalidRequest("voice: a voice is required.", param="voice")
        self.format = body.get("response_format", "mp3")
        if not isinstance(self.format, str) or self.format not in SPEECH_FORMATS:
            raise InvalidRequest(
                f"response_format: must be one of {', '.join(SPEECH_FORMATS)}.",
                param="response_format",
            )
        speed = body.get("speed")
        if speed is not None and (
            not isinstance(speed, int | float) or isinstance(speed, bool) or not 0.25 <= speed <= 4
        ):
            raise InvalidRequest("speed: must be between 0.25 and 4.", param="speed")
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise InvalidRequest("instructions: must be a string.", param="instructions")
        self.instructions = instructions or ""
        self.events = body.get("stream_format", "audio") == "sse"
        if body.get("stream_format", "audio") not in ("audio", "sse"):
            raise InvalidRequest("stream_format: must be 'audio' or 'sse'.", param="stream_format")
        known = ("model", "input", "voice", "response_format", "speed", "instructions")
        self.body = {name: body[name] for name in known if name in body}
        self.unknown = {k: v for k, v in body.items() if k not in (*known, "stream_format")}


async def _read_speech(request: Request) -> Speech:
    return Speech(await entry.read_json_object(request))


def _speech_worst(parsed: Speech, model: ModelEntry, price: Price) -> Usage:
    del price  # the model's own prices decide its unit (a test key's are all zero)
    if model.price.per_character:
        if parsed.events:
            raise InvalidRequest(
                f"stream_format: {model.id} streams audio only.", param="stream_format"
            )
        return Usage(characters=len(parsed.input))
    # Per token: the text (no token is shorter than a byte) and the most audio it may make.
    read = len(parsed.input.encode()) + len(parsed.instructions.encode())
    spoken = model.max_output_tokens
    return Usage(input_tokens=read, output_tokens=spoken, media_output_tokens=spoken)


@units.router.post(SPEECH_PATH)
async def create_speech(request: Request) -> Response:
    call, parsed = await units.begin(
        request, SPEECH_PATH, _read_speech,
        kind="speech", capability="audio", worst=_speech_worst,
    )  # fmt: skip
    worst = call.worst or Usage()
    per_character = bool(worst.characters)
    body = {**parsed.body, "model": call.route.upstream_model}
    if not per_character:
        body["stream_format"] = "sse"  # the only answer that reports its usage
    media_type = SPEECH_FORMATS[parsed.format]
    upstream = UpstreamRequest("/audio/speech", body, stream=not per_character)
    if per_character:
        async with call.failures_recorded():
            audio = await call.provider.open_bytes(upstream)
        return EventStream(
            _relay_audio(call, audio.chunks(), audio, worst), call.response_headers, media_type
        )
    async with call.failures_recorded():
        stream = await call.provider.open_stream(upstream)
    decoder = _DoneDecoder(b"speech.audio.delta", b"speech.audio.done", worst)
    prompt = ir.ChatRequest(model=call.model, messages=[])
    if parsed.events:
        events = translated.relay_events(call, stream, decoder, _Verbatim(), prompt)
        return EventStream(events, call.response_headers)
    events = translated.relay_events(call, stream, decoder, _AudioOut(), prompt)
    return EventStream(events, call.response_headers, media_type)


async def _relay_audio(
    call: Call, chunks: Any, audio: Any, usage: Usage
) -> AsyncGenerator[bytes, None]:
    """Audio bytes as they arrive, the call metered before the last of them (its cost is known
    before the call: an answer cut off is billed it whole, as the provider bills it)."""
    held = b""
    failure: AppError | None = None
    try:
        async for chunk in chunks:
            if held:
                yield held
            held = chunk
    except (asyncio.CancelledError, GeneratorExit):
        audio.close()
        call.finish_soon(usage, status=499)
        raise
    except AppError as error:
        failure = error
    if failure is None:
        audio.release()
        await call.finish(usage)
    else:
        audio.close()
        await call.finish(usage, status=failure.status_code, error=failure)
    if held:
        yield held


class _AudioOut(translated.ToClient):
    """gpt-4o-mini-tts's audio events, as the audio bytes they carry."""

    def content(self, event: SSEEvent | None, _items: Any) -> bytes:
        if event is None or b"speech.audio.delta" not in event.data:
            return b""
        try:
            data = orjson.loads(event.data)
            return base64.b64decode(data.get("audio") or "")
        except (orjson.JSONDecodeError, ValueError, AttributeError):
            return b""

    def end(self, _event: SSEEvent | None, _items: Any, _terminal: Any) -> bytes:
        return b""  # the audio is whole, or cut off: bytes have no error event
