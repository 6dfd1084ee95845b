"""The benchmark's fake upstream: a raw ASGI app (uvicorn + uvloop + httptools) that answers
`POST /v1/chat/completions` with a fixed completion, or a fixed stream of N chunks, and
`POST /v1/messages` (streamed) with N text deltas in Anthropic's event format. Streams go out
back to back, so several events reach a relay in one read; a body with `"bench_spaced": true`
gets its events 1 ms apart instead, one per read, as a model generating tokens sends them.

Beyond chat, by path, whatever the body: `POST /v1/embeddings` answers a fixed list of 16
1536-dimension vectors with its usage, `/v1/audio/transcriptions` a fixed `verbose_json` (what
the gateway asks whisper for) of 5 seconds, and `/v1/audio/speech` ~200 KB of fixed audio
bytes in 16 KB chunks. A chat request offering tools whose last message is not a tool's result
is answered with one call of its first tool (the soak's thread turns, `bench/soak.py`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from typing import Any

import uvicorn

COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the bench."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18,
              "prompt_tokens_details": {"cached_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0}},
}).encode()  # fmt: skip
TOOL_CALL = {
    "id": "chatcmpl-bench-tool", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
        "role": "assistant", "content": None, "tool_calls": [{
            "id": "call_bench", "type": "function",
            "function": {"name": "", "arguments": "{\"city\": \"Paris\"}"},
        }],
    }}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
}  # fmt: skip
EMBEDDING_INPUTS = 16
EMBEDDING_DIMENSIONS = 1536  # text-embedding-3-small's
SPEECH_CHUNK = 16 * 1024
SPEECH_CHUNKS = 13  # 208 KB


def embeddings() -> bytes:
    """OpenAI's embeddings answer, values with its precision, fixed by a seed."""
    values = random.Random(0)
    data = [
        {"object": "embedding", "index": index,
         "embedding": [round(values.uniform(-0.1, 0.1), 10) for _ in range(EMBEDDING_DIMENSIONS)]}
        for index in range(EMBEDDING_INPUTS)
    ]  # fmt: skip
    return json.dumps({
        "object": "list", "data": data, "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8 * EMBEDDING_INPUTS, "total_tokens": 8 * EMBEDDING_INPUTS},
    }).encode()  # fmt: skip


TRANSCRIPTION = json.dumps({
    "task": "transcribe", "language": "english", "duration": 5.0,
    "text": "Hello from the bench. This is five seconds of speech.",
    "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": 5.0,
                  "text": " Hello from the bench. This is five seconds of speech.",
                  "tokens": [50364, 2425, 490, 264, 10638, 13], "temperature": 0.0,
                  "avg_logprob": -0.2, "compression_ratio": 1.1, "no_speech_prob": 0.01}],
    "usage": {"type": "duration", "seconds": 5},
}).encode()  # fmt: skip
SPEECH = [bytes([n % 256]) * SPEECH_CHUNK for n in range(SPEECH_CHUNKS)]


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: bool = False) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-4o-mini",
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }  # fmt: skip
    if usage:
        body["usage"] = {"prompt_tokens": 12, "completion_tokens": 50, "total_tokens": 62}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


def anthropic_stream(chunks: int) -> list[bytes]:
    """As Anthropic streams a text answer: each delta is one event (fixtures/anthropic/03)."""
    message = {
        "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 1, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0},
    }  # fmt: skip
    deltas = [{"type": "text_delta", "text": f" tok{i}"} for i in range(chunks)]
    return [
        _event("message_start", {"message": message}),
        _event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        *(_event("content_block_delta", {"index": 0, "delta": delta}) for delta in deltas),
        _event("content_block_stop", {"index": 0}),
        _event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                 "usage": {"output_tokens": chunks}}),
        _event("message_stop", {}),
    ]  # fmt: skip


def _tool_call(body: bytes) -> bytes | None:
    """A call of the request's first tool, unless it is answering one already."""
    if b'"tools"' not in body:
        return None
    request = json.loads(body)
    tools, messages = request.get("tools") or [], request.get("messages") or []
    if not tools or (messages and messages[-1].get("role") == "tool"):
        return None
    answer = json.loads(json.dumps(TOOL_CALL))
    call = answer["choices"][0]["message"]["tool_calls"][0]
    call["function"]["name"] = tools[0]["function"]["name"]
    return json.dumps(answer).encode()


def make_app(chunks: int) -> Any:
    claude = anthropic_stream(chunks)
    stream = [_chunk({"role": "assistant", "content": ""})]
    stream += [_chunk({"content": f" tok{i}"}) for i in range(chunks)]
    stream += [_chunk({}, "stop"), _chunk({}, usage=True), b"data: [DONE]\n\n"]
    answers = {  # by path: (content type, body parts)
        "/v1/embeddings": (b"application/json", [embeddings()]),
        "/v1/audio/transcriptions": (b"application/json", [TRANSCRIPTION]),
        "/v1/audio/speech": (b"audio/mpeg", SPEECH),
    }

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        fixed = answers.get(scope["path"])
        if fixed is not None:
            content_type, parts = fixed
            headers = [(b"content-type", content_type)]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for index, part in enumerate(parts, 1):
                more = index < len(parts)
                await send({"type": "http.response.body", "body": part, "more_body": more})
            return
        if b'"stream":true' in body or b'"stream": true' in body:
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            spaced = b'"bench_spaced":true' in body or b'"bench_spaced": true' in body
            for event in claude if scope["path"].endswith("/messages") else stream:
                await send({"type": "http.response.body", "body": event, "more_body": True})
                if spaced:
                    await asyncio.sleep(0.001)
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": _tool_call(body) or COMPLETION})

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=50)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.chunks), host="127.0.0.1", port=args.port, loop="uvloop",
        http="httptools", log_level="warning", access_log=False,
    )  # fmt: skip
