"""A fake OpenAI and DeepSeek upstream: real HTTP on loopback, replaying the recorded fixtures.

It runs its own event loop in a thread, so tests that block (the official sync SDKs) cannot
starve it. Tests steer it through plain attributes and read back what it saw.

    /openai/v1/chat/completions   OpenAI    (base URL http://127.0.0.1:PORT/openai/v1)
    /openai/v1/responses          OpenAI's Responses API
    /deepseek/chat/completions    DeepSeek  (base URL http://127.0.0.1:PORT/deepseek)

With tools offered it answers the recorded parallel tool calls (both flavors), unless the last
turn is a tool result: then the recorded text answer, as a model finishing a tool round-trip.
Responses are the recorded streams (reasoning then two calls; text), or, unstreamed, the
response their `response.completed` event carries.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpe_openai
from aiohttp import web

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
