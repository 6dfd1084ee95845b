"""A fake OpenAI and DeepSeek upstream: real HTTP on loopback, replaying the recorded fixtures.

It runs its own event loop in a thread, so tests that block (the official sync SDKs) cannot
starve it. Tests steer it through plain attributes and read back what it saw.

    /openai/v1/chat/completions   OpenAI    (base URL http://127.0.0.1:PORT/openai/v1)
    /openai/v1/responses          OpenAI's Responses API
    /deepseek/chat/completions    DeepSeek  (base URL http://127.0.0.1:PORT/deepseek)
    /openai/v1/embeddings, /openai/v1/audio/transcriptions, /openai/v1/audio/translations,
    /openai/v1/audio/speech, /openai/v1/images/generations, /openai/v1/images/edits
                                  OpenAI's embedding, audio and image endpoints (below)

With tools offered it answers the recorded parallel tool calls (both flavors), unless the last
turn is a tool result: then the recorded text answer, as a model finishing a tool round-trip.
Responses are the recorded streams (reasoning then two calls; text), or, unstreamed, the
response their `response.completed` event carries.

Embeddings, audio and images follow OpenAI's API reference: its request fields, validation
errors (`{"error": {"message", "type", "param", "code"}}`) and answer shapes, usage included.
Each request is recorded in `media` (a `MediaSeen`: the JSON body or the multipart form fields,
the uploaded files' bytes, filename and content type, the status answered, the usage sent, the
audio seconds measured, the images returned) as well as in `seen`; `reported` gets every usage
object sent. Streamed answers (speech, transcription SSE) are followed in `media_streams`
(`StreamRecord`: bytes and events sent, completed, the client gone early). They honour `mode`,
`key_modes` and `failures` like chat, and `media_mode`: "error500", "error400", or "drop" (the
connection dies before the answer, or after a stream's first chunk). `tests/fakes/media.py`
holds the deterministic rules (vectors, durations, tokens, audio bytes, image tokens):

- embeddings: one vector per input, `dimensions` long (default 1536 for text-embedding-3-small
  and ada-002, 3072 for -large), base64 float32 when asked; prompt_tokens = cl100k_base tokens
  of the string inputs + the number of token ids (`embedding_tokens_override` replaces it).
- transcriptions/translations: the duration is a WAV's nframes / framerate, other formats 1.0 s
  (`audio_seconds_override` replaces both); whisper-1 bills `{"type": "duration", "seconds":
  ceil(duration)}` (`reported_seconds_override` replaces the seconds); gpt-4o(-mini)-transcribe
  bill tokens: audio ceil(seconds * 10) (`audio_tokens_override`), prompt and text o200k_base.
  Translations carry no usage, as OpenAI documents them (`translation_usage` adds whisper's).
  `stream=true` on whisper-1 is a 400 (`whisper_stream_rejected = False`: ignored, as OpenAI's
  reference says); gpt-4o models stream `transcript.text.delta` events then
  `transcript.text.done` with the usage, `transcript_chunk_delay` apart.
- speech: the audio of `speech_audio(format, input, speed)` in chunks `speech_chunk_delay`
  apart; `stream_format: "sse"` (gpt-4o-mini-tts only) sends `speech.audio.delta` events and a
  `speech.audio.done` with the usage (`speech_tokens_override` replaces the output tokens).
- images: n items (+ `images_extra`, an upstream that returns and bills more), a URL (served
  at /openai/v1/fake-images/...) or a tiny PNG's base64; GPT image models answer base64 with
  usage by OpenAI's token table, "auto" resolving to `image_auto_quality` / `image_auto_size`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpe_openai
from aiohttp import web

from tests.fakes.media import (
    AUDIO_EXTENSIONS,
    EMBEDDING_DIMENSIONS,
    EMBEDDING_MAX_INPUT_TOKENS,
    EMBEDDING_MAX_INPUTS,
    EMBEDDING_MAX_REQUEST_TOKENS,
    IMAGE_QUALITIES,
    IMAGE_SIZES,
    LANGUAGES,
    MAX_AUDIO_BYTES,
    MAX_EDIT_IMAGES,
    MAX_IMAGE_UPLOAD_BYTES,
    NON_WAV_SECONDS,
    SPEECH_CONTENT_TYPES,
    SPEECH_MAX_INPUT,
    SPEECH_MODELS,
    TINY_PNG,
    TINY_PNG_BASE64,
    TRANSCRIPTION_FORMATS,
    MediaSeen,
    MultipartTooLarge,
    StreamRecord,
    Upload,
    audio_seconds,
    embedding_base64,
    embedding_inputs,
    embedding_item_tokens,
    embedding_vector,
    field_list,
    field_str,
    image_family,
    image_usage,
    is_wav,
    media_failure,
    model_not_found,
    openai_error,
    read_form,
    read_json,
    segments,
    speech_audio,
    speech_chunks,
    speech_seconds,
    speech_usage,
    subtitles,
    too_large,
    transcript_pieces,
    transcript_text,
    transcription_token_usage,
    words,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers"


def fixture(path: str) -> bytes:
    return (FIXTURES / path).read_bytes()


def sse_events(path: str) -> list[bytes]:
    """The raw events of a recorded stream, comments included, each with its blank line."""
    return [part + b"\n\n" for part in fixture(path).split(b"\n\n") if part.strip()]


def http_fixture(path: str) -> tuple[int, dict[str, str], bytes]:
    head, _, body = fixture(path).partition(b"\n\n")
    lines = head.decode().splitlines()
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers.pop("content-length", None)
    return status, headers, body


def client_port(request: web.Request) -> int:
    """The port the request came from: one per connection the gateway opened."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return int(peer[1]) if peer else 0


_ENCODING = bpe_openai.get_encoding("o200k_base")


def billed_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """OpenAI's published counting rule: 3 per message + its text, 3 to prime the reply."""
    total = 3
    for message in messages:
        total += 3 + len(_ENCODING.encode(message["role"]))
        content = message.get("content")
        if isinstance(content, str):
            total += len(_ENCODING.encode(content))
    return total


_ERRORS = {
    "400": "07_error_400_context_length_exceeded",
    "401": "08_error_401_invalid_api_key",
    "429": "09_error_429_rate_limit_tokens",
    "500": "11_error_500_server_error",
    "quota": "10_error_429_insufficient_quota",
}


# The `error` event (ResponseErrorEvent) a failed Responses stream carries, after the first delta.
RESPONSES_ERROR = (
    b'event: error\ndata: {"type":"error","sequence_number":5,"code":"server_error",'
    b'"message":"The server had an error while processing your request.","param":null}\n\n'
)


def _responses_calls_tools(body: dict[str, Any]) -> bool:
    given = body.get("input")
    last = given[-1] if isinstance(given, list) and given else {}
    return bool(body.get("tools")) and last.get("type") != "function_call_output"


def _calls_tools(body: dict[str, Any]) -> bool:
    """Tools offered and the last turn is not a tool result: answer with the recorded calls."""
    messages = body.get("messages") or [{}]
    return bool(body.get("tools")) and messages[-1].get("role") != "tool"


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    peer: int = 0  # the client's port: one per connection


@dataclass
class FakeUpstream:
    # "ok", "400", "401", "429", "500", "503", "stall", "drop" (stream dies after 2 events),
    # "generate" (a slow word-by-word stream that bills only what it managed to send).
    mode: str = "ok"
    chunk_delay: float = 0.0
    pause_after_first: float = 0.0
    stall_seconds: float = 5.0
    words: int = 40
    seen: list[Seen] = field(default_factory=list)
    # What the fake "billed" for each request: {"prompt_tokens", "completion_tokens", ...}.
    reported: list[dict[str, Any]] = field(default_factory=list)
    disconnects: int = 0
    port: int = 0
    # A webhook receiver on the same server: POST /hooks records (headers, raw body).
    hooks: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    hook_failures: int = 0  # answer this many deliveries with 500 first
    # Per account (the bearer key): a mode that wins over `mode`; and modes to use, one per
    # request, before either ("fail N times then succeed"), optionally per key as well.
    key_modes: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    key_failures: dict[str, list[str]] = field(default_factory=dict)
    # Keys `GET /models` (the check a BYOK key gets on save) refuses with a 401.
    rejected_keys: set[str] = field(default_factory=set)
    # Responses answers carry their fixture's id unless this is set (each then gets its own).
    fresh_response_ids: bool = False
    responses_made: int = 0
    # Embeddings, audio and images (the module docstring; the rules in tests/fakes/media.py).
    media_mode: str = "ok"  # "ok", "error500", "error400", "drop"
    media: list[MediaSeen] = field(default_factory=list)
    media_streams: list[StreamRecord] = field(default_factory=list)
    embedding_tokens_override: int | None = None
    audio_seconds_override: float | None = None
    reported_seconds_override: float | None = None
    audio_tokens_override: int | None = None
    whisper_stream_rejected: bool = True
    translation_usage: bool = False
    transcript_chunk_delay: float = 0.0
    speech_chunk_delay: float = 0.0
    speech_tokens_override: int | None = None
    images_extra: int = 0
    image_auto_quality: str = "medium"
    image_auto_size: str = "1024x1024"

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._runner: web.AppRunner | None = None

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/openai/v1"

    @property
    def deepseek_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/deepseek"

    def reset(self) -> None:
        self.mode, self.chunk_delay, self.pause_after_first = "ok", 0.0, 0.0
        self.words = 40
        self.seen.clear()
        self.reported.clear()
        self.disconnects = 0
        self.hooks.clear()
        self.hook_failures = 0
        self.key_modes.clear()
        self.failures.clear()
        self.key_failures.clear()
        self.rejected_keys.clear()
        self.fresh_response_ids = False
        self.media_mode = "ok"
        self.media.clear()
        self.media_streams.clear()
        self.embedding_tokens_override = self.audio_tokens_override = None
        self.audio_seconds_override = self.reported_seconds_override = None
        self.whisper_stream_rejected, self.translation_usage = True, False
        self.transcript_chunk_delay = self.speech_chunk_delay = 0.0
        self.speech_tokens_override = None
        self.images_extra = 0
        self.image_auto_quality, self.image_auto_size = "medium", "1024x1024"

    def keys_seen(self) -> list[str]:
        """The bearer key of every request seen, in order: which account served each."""
        return [s.headers.get("Authorization", "").removeprefix("Bearer ") for s in self.seen]

    # lifecycle -----------------------------------------------------------------------------
    def start(self) -> FakeUpstream:
        self._thread = threading.Thread(target=self._serve, name="fake-upstream", daemon=True)
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/openai/v1/chat/completions", self._chat)
        app.router.add_post("/openai/v1/responses", self._responses)
        app.router.add_post("/deepseek/chat/completions", self._chat)
        app.router.add_get("/openai/v1/models", self._models)
        app.router.add_get("/deepseek/models", self._models)
        app.router.add_post("/hooks", self._hook)
        app.router.add_post("/openai/v1/embeddings", self._embeddings)
        app.router.add_post("/openai/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/openai/v1/audio/translations", self._transcriptions)
        app.router.add_post("/openai/v1/audio/speech", self._speech)
        app.router.add_post("/openai/v1/images/generations", self._image_generations)
        app.router.add_post("/openai/v1/images/edits", self._image_edits)
        app.router.add_get("/openai/v1/fake-images/{name}", self._image_file)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._started.set()
        self._loop.run_forever()
        self._loop.close()

    @property
    def hooks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    # handlers ------------------------------------------------------------------------------
    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.hook_failures > 0:
            self.hook_failures -= 1
            return web.Response(status=500)
        self.hooks.append((dict(request.headers), body))
        return web.Response(status=204)

    async def _models(self, request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if key in self.rejected_keys:
            status, headers, payload = http_fixture(f"openai-chat/{_ERRORS['401']}.http")
            return web.Response(status=status, body=payload, headers=headers)
        return web.json_response({"object": "list", "data": [{"id": "gpt-4o", "object": "model"}]})

    def _mode_for(self, key: str) -> str:
        queued = self.key_failures.get(key)
        if queued:
            return queued.pop(0)
        if self.failures:
            return self.failures.pop(0)
        return self.key_modes.get(key, self.mode)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(Seen(request.path, body, dict(request.headers), client_port(request)))
        flavor = "deepseek" if request.path.startswith("/deepseek") else "openai"
        mode = self._mode_for(request.headers.get("Authorization", "").removeprefix("Bearer "))
        failed = await self._failure(mode)
        if failed is not None:
            return failed
        if body.get("stream"):
            return await self._stream(request, body, flavor, mode)
        if mode == "generate":
            return await self._generated_completion(body)
        if _calls_tools(body):
            name = "openai-chat/03_response_nonstream_parallel_tool_calls.json"
        elif flavor == "deepseek":
            name = "deepseek/02_response_chat_cache_hit.json" if body["model"] == "deepseek-chat" \
                else "deepseek/01_response_reasoner_nonstream.json"  # fmt: skip
        else:
            name = "openai-chat/02_response_nonstream_usage_cached_reasoning.json"
        payload = fixture(name)
        self.reported.append(json.loads(payload)["usage"])
        return web.Response(body=payload, content_type="application/json")

    async def _failure(self, mode: str) -> web.Response | None:
        """The error a failure mode answers with (OpenAI's shapes); None: answer normally."""
        if mode in ("400", "401", "429", "500", "quota"):
            status, headers, payload = http_fixture(f"openai-chat/{_ERRORS[mode]}.http")
            return web.Response(status=status, body=payload, headers=headers)
        if mode.startswith("status_"):  # any status, in OpenAI's error shape
            status = int(mode.split("_")[1])
            code = "x" * 100 if mode.endswith("_longcode") else f"c{status}"
            error = {"error": {"message": f"status {status}", "type": "x", "code": code}}
            return web.json_response(error, status=status)
        if mode == "html":  # a proxy's error page, sent with 200
            return web.Response(body=b"<html>oops</html>", content_type="text/html")
        if mode == "503":
            return web.json_response(
                {"error": {"message": "overloaded", "type": "server_error"}}, status=503
            )
        if mode == "stall":
            await asyncio.sleep(self.stall_seconds)
        return None

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(Seen(request.path, body, dict(request.headers), client_port(request)))
        mode = self._mode_for(request.headers.get("Authorization", "").removeprefix("Bearer "))
        failed = await self._failure(mode)
        if failed is not None:
            return failed
        if _responses_calls_tools(body):
            events = sse_events("openai-responses/04_stream_reasoning_then_two_function_calls.sse")
        else:
            events = sse_events("openai-responses/03_stream_text.sse")
        completed = json.loads(events[-1].split(b"data: ", 1)[1])["response"]
        if self.fresh_response_ids:  # as the API does: every response its own id
            self.responses_made += 1
            fresh = f"resp_{self.responses_made:048x}"
            events = [e.replace(completed["id"].encode(), fresh.encode()) for e in events]
            completed["id"] = fresh
        self.reported.append(completed["usage"])
        if not body.get("stream"):
            return web.json_response(completed)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for index, event in enumerate(events):
                await response.write(event)
                if b".delta" in event.split(b"\n", 1)[0] and mode in ("drop", "midstream_error"):
                    if mode == "midstream_error":  # as the API reports a failure mid-stream
                        await response.write(RESPONSES_ERROR)
                        return response
                    assert request.transport is not None
                    request.transport.close()  # the connection dies after the first delta
                    return response
                await asyncio.sleep(self.pause_after_first if index == 0 else self.chunk_delay)
        except ConnectionError:
            self.disconnects += 1
        return response

    async def _stream(
        self, request: web.Request, body: dict[str, Any], flavor: str, mode: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if mode == "drop0":  # the connection dies before the first event
            assert request.transport is not None
            request.transport.close()
            return response
        if mode == "generate":
            return await self._generate(response, body)
        if _calls_tools(body):
            events = sse_events("openai-chat/06_stream_parallel_tool_calls_split_args.sse")
        elif flavor == "deepseek":
            events = sse_events("deepseek/03_stream_reasoner.sse")
        else:
            events = sse_events("openai-chat/04_stream_text_include_usage.sse")
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        try:
            for index, event in enumerate(events):
                if b'"choices":[]' in event and not include_usage:
                    continue  # OpenAI sends the usage chunk only when asked
                if b'"usage":{' in event:
                    self.reported.append(json.loads(event[len(b"data: ") :])["usage"])
                if mode == "drop" and index == 2:
                    assert request.transport is not None
                    request.transport.close()  # the connection dies mid-stream
                    return response
                await response.write(event)
                await asyncio.sleep(self.pause_after_first if index == 0 else self.chunk_delay)
        except ConnectionError:  # aiohttp's ClientConnectionResetError: the gateway hung up
            self.disconnects += 1
        return response

    async def _generate(
        self, response: web.StreamResponse, body: dict[str, Any]
    ) -> web.StreamResponse:
        head = {
            "id": "chatcmpl-gen",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": body["model"],
        }
        sent: list[str] = []
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        try:
            for index in range(self._word_count(body)):
                piece = " word" if index else "word"
                chunk = {
                    **head,
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
                await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                sent.append(piece)
                await asyncio.sleep(self.chunk_delay)
            if include_usage:
                usage = self._usage(body, "".join(sent))
                final = {**head, "choices": [], "usage": usage}
                await response.write(b"data: " + json.dumps(final).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
        except ConnectionError:
            self.disconnects += 1
        finally:
            self.reported.append(self._usage(body, "".join(sent)))
        return response

    def _word_count(self, body: dict[str, Any]) -> int:
        """As a real model: never more output tokens than the request's cap."""
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        return min(self.words, cap) if isinstance(cap, int) else self.words

    def _usage(self, body: dict[str, Any], text: str) -> dict[str, int]:
        prompt = billed_prompt_tokens(body["messages"])
        completion = len(_ENCODING.encode(text))
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}  # fmt: skip

    async def _generated_completion(self, body: dict[str, Any]) -> web.Response:
        words = self._word_count(body)
        await asyncio.sleep(self.chunk_delay * words)  # as long as the stream would take
        text = " ".join(["word"] * words)
        usage = self._usage(body, text)
        self.reported.append(usage)
        message = {"role": "assistant", "content": text}
        return web.json_response({
            "id": "chatcmpl-gen", "object": "chat.completion", "created": 1,
            "model": body["model"], "usage": usage,
            "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
        })  # fmt: skip

    # embeddings, audio and images ----------------------------------------------------------
    async def _media_start(
        self, request: web.Request, body: dict[str, Any], files: list[Upload] | None = None
    ) -> tuple[MediaSeen, web.Response | None]:
        """Record the request; the failure a test asked for, if any."""
        headers = dict(request.headers)
        seen = MediaSeen(request.path, body, files or [], headers)
        self.media.append(seen)
        self.seen.append(Seen(request.path, body, headers, client_port(request)))
        failed = await self._failure(self._mode_for(headers.get("Authorization", "")
                                                    .removeprefix("Bearer ")))  # fmt: skip
        failed = failed or media_failure(self.media_mode)
        if failed is not None:
            seen.status = failed.status
        return seen, failed

    def _answer(
        self, request: web.Request, seen: MediaSeen, response: web.Response
    ) -> web.Response:
        seen.status = response.status
        if response.status == 200 and self.media_mode == "drop":
            assert request.transport is not None
            request.transport.close()  # the connection dies before the answer
        return response

    def _bill(self, seen: MediaSeen, usage: dict[str, Any] | None) -> None:
        seen.usage = usage
        if usage is not None:
            self.reported.append(usage)

    async def _json_media(self, request: web.Request) -> tuple[MediaSeen, Any]:
        """A JSON endpoint's start: the body, or the response to send instead."""
        try:
            body = await read_json(request)
        except ValueError:
            body = None
        seen, failed = await self._media_start(request, body if isinstance(body, dict) else {})
        if failed is not None:
            return seen, failed
        if not isinstance(body, dict):
            return seen, self._answer(request, seen, openai_error(
                400, "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                "payload, but what was sent was not valid JSON.)"))  # fmt: skip
        return seen, body

    async def _embeddings(self, request: web.Request) -> web.Response:
        seen, body = await self._json_media(request)
        if isinstance(body, web.Response):
            return body
        ask = _embedding_request(body)
        if isinstance(ask, web.Response):
            return self._answer(request, seen, ask)
        model, items, dims, encoding, tokens = ask
        data = []
        for index, item in enumerate(items):
            vector = embedding_vector(model, item, dims)
            data.append({"object": "embedding", "index": index,
                         "embedding": embedding_base64(vector) if encoding == "base64"
                         else vector})  # fmt: skip
        if self.embedding_tokens_override is not None:
            tokens = self.embedding_tokens_override
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        self._bill(seen, usage)
        answer = {"object": "list", "data": data, "model": model, "usage": usage}
        return self._answer(request, seen, web.json_response(answer))

    async def _multipart_media(
        self, request: web.Request, limit: int
    ) -> tuple[MediaSeen | None, Any, list[Upload]]:
        """A multipart endpoint's start: the form fields and files, or the response instead."""
        if request.content_type != "multipart/form-data":
            return None, openai_error(400, f"Invalid Content-Type header ({request.content_type})"
                                      ", expected multipart/form-data."), []  # fmt: skip
        try:
            fields, files = await read_form(request, limit)
        except MultipartTooLarge as exc:
            return None, too_large(exc.args[0], limit), []
        except (ValueError, UnicodeDecodeError):
            return None, openai_error(400, "Could not parse multipart form"), []
        seen, failed = await self._media_start(request, dict(fields), files)
        return seen, failed if failed is not None else fields, files

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        seen, fields, files = await self._multipart_media(request, MAX_AUDIO_BYTES)
        if seen is None or isinstance(fields, web.Response):
            return fields  # type: ignore[no-any-return]
        task = "translate" if request.path.endswith("/translations") else "transcribe"
        ask = _audio_request(task, fields, files, self.whisper_stream_rejected)
        if isinstance(ask, web.Response):
            return self._answer(request, seen, ask)
        seconds = self._heard(ask.upload)
        if seconds is None:
            return self._answer(request, seen, openai_error(
                400, "Audio file might be corrupted or unsupported", param="file",
                code="invalid_value"))  # fmt: skip
        seen.seconds = seconds
        text = transcript_text(seconds)
        usage = self._audio_usage(ask, seconds, text)
        if ask.stream:
            seen.usage = usage
            events: list[dict[str, Any]] = [
                {"type": "transcript.text.delta", "delta": p} for p in transcript_pieces(text)
            ]
            events.append({"type": "transcript.text.done", "text": text, "usage": usage})
            payloads = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
            record = StreamRecord(request.path, ask.model, sum(map(len, payloads)))
            return await self._send_stream(request, record, payloads, "text/event-stream",
                                           self.transcript_chunk_delay, usage)  # fmt: skip
        self._bill(seen, usage)
        return self._answer(request, seen, _audio_answer(ask, seconds, text, usage))

    def _heard(self, upload: Upload) -> float | None:
        """The audio's duration as the fake measures it (None: a WAV it cannot read)."""
        if self.audio_seconds_override is not None:
            return self.audio_seconds_override
        return audio_seconds(upload.data) if is_wav(upload.data) else NON_WAV_SECONDS

    def _audio_usage(self, ask: _Audio, seconds: float, text: str) -> dict[str, Any] | None:
        if ask.billing == "tokens":
            return transcription_token_usage(seconds, ask.prompt, text, self.audio_tokens_override)
        if ask.task == "translate" and not self.translation_usage:
            return None
        billed = self.reported_seconds_override
        return {"type": "duration", "seconds": math.ceil(seconds) if billed is None else billed}

    async def _send_stream(
        self,
        request: web.Request,
        record: StreamRecord,
        chunks: list[bytes],
        content_type: str,
        delay: float,
        usage: dict[str, Any] | None = None,
    ) -> web.StreamResponse:
        """Send `chunks` `delay` apart, following how far they got; `usage` is billed once the
        last chunk (the one carrying it) is out."""
        self.media_streams.append(record)
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        try:
            for index, chunk in enumerate(chunks):
                if index and self.media_mode == "drop":
                    assert request.transport is not None
                    request.transport.close()  # the connection dies after the first chunk
                    return response
                if index:
                    await asyncio.sleep(delay)
                await response.write(chunk)
                record.bytes_sent += len(chunk)
                record.events_sent += 1
            if usage is not None:
                self.reported.append(usage)
            await response.write_eof()
            record.completed = True
        except ConnectionError:  # the client went away
            record.disconnected = True
        except asyncio.CancelledError:
            record.disconnected = True
            raise
        return response

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        seen, body = await self._json_media(request)
        if isinstance(body, web.Response):
            return body
        ask = _speech_request(body)
        if isinstance(ask, web.Response):
            return self._answer(request, seen, ask)
        audio = speech_audio(ask.format, ask.text, ask.speed)
        seen.seconds = speech_seconds(ask.text, ask.speed)
        if not ask.sse:
            record = StreamRecord(request.path, ask.model, len(audio))
            return await self._send_stream(request, record, speech_chunks(audio),
                                           SPEECH_CONTENT_TYPES[ask.format],
                                           self.speech_chunk_delay)  # fmt: skip
        usage = speech_usage(ask.text, ask.instructions, ask.speed, self.speech_tokens_override)
        seen.usage = usage
        events: list[dict[str, Any]] = [
            {"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}
            for chunk in speech_chunks(audio)
        ]
        events.append({"type": "speech.audio.done", "usage": usage})
        payloads = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
        record = StreamRecord(request.path, ask.model, sum(map(len, payloads)))
        return await self._send_stream(request, record, payloads, "text/event-stream",
                                       self.speech_chunk_delay, usage)  # fmt: skip

    async def _image_generations(self, request: web.Request) -> web.Response:
        seen, body = await self._json_media(request)
        if isinstance(body, web.Response):
            return body
        ask = _image_request(body, False, self.image_auto_quality, self.image_auto_size)
        if isinstance(ask, web.Response):
            return self._answer(request, seen, ask)
        return self._answer(request, seen, self._images(request, seen, ask, 0))

    async def _image_edits(self, request: web.Request) -> web.Response:
        seen, fields, files = await self._multipart_media(request, MAX_IMAGE_UPLOAD_BYTES)
        if seen is None or isinstance(fields, web.Response):
            return fields  # type: ignore[no-any-return]
        ask = _image_request(dict(fields), True, self.image_auto_quality, self.image_auto_size)
        if isinstance(ask, web.Response):
            return self._answer(request, seen, ask)
        images = [f for f in files if f.field in ("image", "image[]")]
        refused = _edit_images_refused(ask, images)
        if refused is not None:
            return self._answer(request, seen, refused)
        return self._answer(request, seen, self._images(request, seen, ask, len(images)))

    def _images(
        self, request: web.Request, seen: MediaSeen, ask: _Images, input_images: int
    ) -> web.Response:
        count = ask.n + self.images_extra
        items: list[dict[str, Any]] = []
        for index in range(count):
            if ask.family == "gpt-image" or ask.response_format == "b64_json":
                items.append({"b64_json": TINY_PNG_BASE64})
            else:
                items.append({"url": f"http://{request.host}/openai/v1/fake-images/"
                                     f"img-{len(self.media)}-{index}.png"})  # fmt: skip
            if ask.family == "dall-e-3":
                items[-1]["revised_prompt"] = ask.prompt
        seen.images = count
        answer: dict[str, Any] = {"created": int(time.time()), "data": items}
        if ask.family == "gpt-image":
            usage = image_usage(ask.prompt, count, ask.quality, ask.size, input_images)
            self._bill(seen, usage)
            answer |= {"background": ask.background, "output_format": ask.output_format,
                       "quality": ask.quality, "size": ask.size, "usage": usage}  # fmt: skip
        return web.json_response(answer)

    async def _image_file(self, request: web.Request) -> web.Response:
        return web.Response(body=TINY_PNG, content_type="image/png")


# embeddings, audio and images: what a request asks, or OpenAI's 400 -----------------------------
def _embedding_request(
    body: dict[str, Any],
) -> web.Response | tuple[str, list[str | list[int]], int, str, int]:
    """(model, inputs, dimensions, encoding, prompt tokens), or OpenAI's refusal."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return openai_error(400, "you must provide a model parameter")
    native = EMBEDDING_DIMENSIONS.get(model)
    if native is None:
        return model_not_found(model)
    items = embedding_inputs(body.get("input"))
    if items is None:
        return openai_error(400, "'$.input' is invalid. Please check the API reference: "
                            "https://platform.openai.com/docs/api-reference.")  # fmt: skip
    if len(items) > EMBEDDING_MAX_INPUTS:
        return openai_error(400, f"Invalid 'input': array too long. Expected an array with maximum "
                            f"length {EMBEDDING_MAX_INPUTS}, but got an array with length "
                            f"{len(items)} instead.", param="input",
                            code="array_above_max_length")  # fmt: skip
    dims = body.get("dimensions")
    refused = _dimensions_refused(model, dims, native)
    if refused is not None:
        return refused
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        return openai_error(400, f"Invalid value: '{encoding}'. Supported values are: 'float' and "
                            "'base64'.", param="encoding_format", code="invalid_value")  # fmt: skip
    counts = [embedding_item_tokens(item) for item in items]
    if max(counts) > EMBEDDING_MAX_INPUT_TOKENS:
        return openai_error(400, f"This model's maximum context length is "
                            f"{EMBEDDING_MAX_INPUT_TOKENS} tokens, however you requested "
                            f"{max(counts)} tokens ({max(counts)} in your prompt; 0 for the "
                            "completion). Please reduce your prompt; or completion "
                            "length.")  # fmt: skip
    if sum(counts) > EMBEDDING_MAX_REQUEST_TOKENS:
        return openai_error(400, f"Requested {sum(counts)} tokens, max "
                            f"{EMBEDDING_MAX_REQUEST_TOKENS} tokens per request",
                            code="max_tokens_per_request")  # fmt: skip
    return model, items, dims or native, encoding, sum(counts)


def _dimensions_refused(model: str, dims: Any, native: int) -> web.Response | None:
    if dims is None:
        return None
    if model == "text-embedding-ada-002":
        return openai_error(400, "This model does not support specifying dimensions.",
                            param="dimensions")  # fmt: skip
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= native:
        return openai_error(400, f"Invalid value for 'dimensions' = {dims}. Must be between 1 and "
                            f"{native}.", param="dimensions", code="invalid_value")  # fmt: skip
    return None


@dataclass
class _Audio:
    task: str  # "transcribe" or "translate"
    model: str
    billing: str  # "duration" (whisper-1) or "tokens" (gpt-4o(-mini)-transcribe)
    format: str
    stream: bool
    prompt: str | None
    language: str | None
    granularities: list[str]
    upload: Upload


def _audio_billing(task: str, model: str) -> web.Response | str:
    if model == "whisper-1":
        return "duration"
    if not model.startswith(("gpt-4o-transcribe", "gpt-4o-mini-transcribe")):
        return model_not_found(model)
    if task == "translate":
        return openai_error(400, f"Invalid value: '{model}'. Supported values are: 'whisper-1'.",
                            param="model", code="invalid_value")  # fmt: skip
    return "tokens"


def _audio_request(
    task: str, fields: dict[str, str | list[str]], files: list[Upload], reject_stream: bool
) -> web.Response | _Audio:
    upload = next((f for f in files if f.field == "file"), None)
    if upload is None:
        return openai_error(400, "Missing required parameter: 'file'.", param="file",
                            code="missing_required_parameter")  # fmt: skip
    model = field_str(fields, "model")
    if not model:
        return openai_error(400, "you must provide a model parameter")
    billing = _audio_billing(task, model)
    if isinstance(billing, web.Response):
        return billing
    fmt = field_str(fields, "response_format") or "json"
    if fmt not in TRANSCRIPTION_FORMATS:
        return openai_error(400, f"'{fmt}' is not one of {list(TRANSCRIPTION_FORMATS)} - "
                            "'response_format'", param="response_format",
                            code="invalid_value")  # fmt: skip
    if billing == "tokens" and fmt not in ("json", "text"):
        return openai_error(400, f"response_format '{fmt}' is not compatible with model "
                            f"'{model}'. Use 'json' or 'text' instead.",
                            param="response_format", code="unsupported_value")  # fmt: skip
    stream = (field_str(fields, "stream") or "").lower() == "true"
    if stream and billing == "duration" and reject_stream:
        return openai_error(400, f"Streaming is not supported for model '{model}'.",
                            param="stream", code="unsupported_value")  # fmt: skip
    extension = (upload.filename or "").rpartition(".")[2].lower()
    if not is_wav(upload.data) and extension not in AUDIO_EXTENSIONS:
        return openai_error(400, f"Invalid file format. Supported formats: "
                            f"{list(AUDIO_EXTENSIONS)}")  # fmt: skip
    granularities = field_list(fields, "timestamp_granularities[]", "timestamp_granularities")
    return _Audio(task, model, billing, fmt, stream and billing == "tokens",
                  field_str(fields, "prompt"), field_str(fields, "language"), granularities,
                  upload)  # fmt: skip


def _audio_answer(ask: _Audio, seconds: float, text: str,
                  usage: dict[str, Any] | None) -> web.Response:  # fmt: skip
    if ask.format == "text":
        return web.Response(text=text + "\n", content_type="text/plain", charset="utf-8")
    if ask.format in ("srt", "vtt"):
        return web.Response(text=subtitles(text, seconds, ask.format), content_type="text/plain",
                            charset="utf-8")  # fmt: skip
    answer: dict[str, Any] = {"text": text}
    if ask.format == "verbose_json":
        language = LANGUAGES.get(ask.language or "en", ask.language)
        if ask.task == "translate":
            language = "english"
        answer = {"task": ask.task, "language": language, "duration": seconds, "text": text}
        if not ask.granularities or "segment" in ask.granularities:
            answer["segments"] = segments(text, seconds)
        if "word" in ask.granularities:
            answer["words"] = words(text, seconds)
    if usage is not None:
        answer["usage"] = usage
    return web.json_response(answer)


@dataclass
class _Speech:
    model: str
    text: str
    format: str
    speed: float
    instructions: str | None
    sse: bool


def _speech_request(body: dict[str, Any]) -> web.Response | _Speech:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return openai_error(400, "you must provide a model parameter")
    if model not in SPEECH_MODELS and not model.startswith("gpt-4o-mini-tts"):
        return model_not_found(model)
    text = body.get("input")
    if not isinstance(text, str) or not text:
        return openai_error(400, "Missing required parameter: 'input'.", param="input",
                            code="missing_required_parameter")  # fmt: skip
    if len(text) > SPEECH_MAX_INPUT:
        return openai_error(400, f"Invalid 'input': string too long. Expected a string with "
                            f"maximum length {SPEECH_MAX_INPUT}, but got a string with length "
                            f"{len(text)} instead.", param="input",
                            code="string_above_max_length")  # fmt: skip
    voice = body.get("voice")
    if not (isinstance(voice, str) and voice) and not (isinstance(voice, dict) and voice.get("id")):
        return openai_error(400, "Missing required parameter: 'voice'.", param="voice",
                            code="missing_required_parameter")  # fmt: skip
    refused = _speech_options_refused(model, body)
    if refused is not None:
        return refused
    return _Speech(model, text, body.get("response_format") or "mp3",
                   float(body.get("speed") or 1.0), body.get("instructions"),
                   body.get("stream_format") == "sse")  # fmt: skip


def _speech_options_refused(model: str, body: dict[str, Any]) -> web.Response | None:
    fmt = body.get("response_format") or "mp3"
    if fmt not in SPEECH_CONTENT_TYPES:
        return openai_error(400, f"Invalid value: '{fmt}'. Supported values are: "
                            f"{', '.join(repr(f) for f in SPEECH_CONTENT_TYPES)}.",
                            param="response_format", code="invalid_value")  # fmt: skip
    speed = body.get("speed")
    if speed is not None and (not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0):
        return openai_error(400, f"Invalid 'speed': expected a number between 0.25 and 4.0, but "
                            f"got {speed!r} instead.", param="speed",
                            code="invalid_value")  # fmt: skip
    stream_format = body.get("stream_format") or "audio"
    if stream_format not in ("audio", "sse"):
        return openai_error(400, f"Invalid value: '{stream_format}'. Supported values are: "
                            "'sse' and 'audio'.", param="stream_format",
                            code="invalid_value")  # fmt: skip
    if stream_format == "sse" and model in ("tts-1", "tts-1-hd"):
        return openai_error(400, f"stream_format 'sse' is not supported for model '{model}'.",
                            param="stream_format", code="unsupported_value")  # fmt: skip
    return None


@dataclass
class _Images:
    model: str
    family: str  # "dall-e-2", "dall-e-3" or "gpt-image"
    prompt: str
    n: int
    size: str  # resolved ("auto" becomes the fake's choice)
    quality: str  # resolved likewise
    response_format: str
    output_format: str
    background: str


_GPT_IMAGE_ONLY = ("output_format", "background", "output_compression", "moderation",
                   "input_fidelity", "partial_images")  # fmt: skip


def _image_request(
    values: dict[str, Any], edit: bool, auto_quality: str, auto_size: str
) -> web.Response | _Images:
    model = values.get("model") or "dall-e-2"
    family = image_family(model)
    if family is None:
        return model_not_found(model)
    if edit and family == "dall-e-3":
        return openai_error(400, "Invalid value: 'dall-e-3'. Supported values are: 'dall-e-2' and "
                            "'gpt-image-1'.", param="model", code="invalid_value")  # fmt: skip
    prompt = values.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return openai_error(400, "Missing required parameter: 'prompt'.", param="prompt",
                            code="missing_required_parameter")  # fmt: skip
    if str(values.get("stream", "")).lower() == "true":
        return openai_error(400, "Streaming is not supported for this request.", param="stream",
                            code="unsupported_value")  # fmt: skip
    n = _integer(values.get("n", 1))
    if n is None or not 1 <= n <= (1 if family == "dall-e-3" else 10):
        top = 1 if family == "dall-e-3" else 10
        return openai_error(400, f"Invalid 'n': expected an integer between 1 and {top}, but got "
                            f"{values.get('n')!r} instead.", param="n",
                            code="invalid_value")  # fmt: skip
    options = _image_options(family, values)
    if isinstance(options, web.Response):
        return options
    size, quality, response_format = options
    gpt = family == "gpt-image"
    return _Images(model, family, prompt, n, auto_size if size == "auto" else size,
                   auto_quality if quality == "auto" else quality, response_format,
                   values.get("output_format") or "png",
                   "opaque" if values.get("background") in (None, "auto") or not gpt
                   else values["background"])  # fmt: skip


def _image_options(family: str, values: dict[str, Any]) -> web.Response | tuple[str, str, str]:
    gpt = family == "gpt-image"
    unknown = next((name for name in _GPT_IMAGE_ONLY if values.get(name) is not None), None)
    if not gpt and unknown is not None:
        return openai_error(400, f"Unknown parameter: '{unknown}'.", param=unknown,
                            code="unknown_parameter")  # fmt: skip
    if gpt and values.get("response_format") is not None:
        return openai_error(400, "Unknown parameter: 'response_format'.", param="response_format",
                            code="unknown_parameter")  # fmt: skip
    chosen = {"size": values.get("size") or ("auto" if gpt else "1024x1024"),
              "quality": values.get("quality") or ("auto" if gpt else "standard"),
              "response_format": values.get("response_format") or "url",
              "output_format": values.get("output_format") or "png",
              "background": values.get("background") or "auto"}  # fmt: skip
    allowed = {"size": IMAGE_SIZES[family], "quality": IMAGE_QUALITIES[family],
               "response_format": ("url", "b64_json"), "output_format": ("png", "jpeg", "webp"),
               "background": ("transparent", "opaque", "auto")}  # fmt: skip
    for name, value in chosen.items():
        if value not in allowed[name]:
            return openai_error(400, f"Invalid value: '{value}'. Supported values are: "
                                f"{', '.join(repr(v) for v in allowed[name])}.", param=name,
                                code="invalid_value")  # fmt: skip
    return chosen["size"], chosen["quality"], chosen["response_format"]


def _edit_images_refused(ask: _Images, images: list[Upload]) -> web.Response | None:
    if not images:
        return openai_error(400, "Missing required parameter: 'image'.", param="image",
                            code="missing_required_parameter")  # fmt: skip
    if ask.family == "dall-e-2" and (
        len(images) > 1 or not images[0].data.startswith(TINY_PNG[:8])
    ):
        return openai_error(400, "Uploaded image must be a PNG and less than 4 MB.",
                            param="image", code="invalid_value")  # fmt: skip
    if len(images) > MAX_EDIT_IMAGES:
        return openai_error(400, f"Invalid 'image': array too long. Expected an array with maximum "
                            f"length {MAX_EDIT_IMAGES}, but got an array with length "
                            f"{len(images)} instead.", param="image",
                            code="array_above_max_length")  # fmt: skip
    return None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return None
