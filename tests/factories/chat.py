"""Request pieces shared by the proxy tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

HELLO: list[dict[str, Any]] = [{"role": "user", "content": "Hello"}]

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@dataclass
class Timed:
    first_after: float  # seconds to the first `data:` line
    total: float  # seconds to the end of the stream
    rest: list[str]  # the `data:` lines after the first


async def timed_stream(
    http: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str]
) -> Timed:
    """Stream `body` to `path`, timing the first event and the whole stream."""
    started = time.monotonic()
    async with http.stream("POST", path, json=body, headers=headers) as response:
        lines = response.aiter_lines()
        first_after = -1.0
        async for line in lines:
            if line.startswith("data: "):
                first_after = time.monotonic() - started
                break
        rest = [line async for line in lines if line.startswith("data: ")]
    return Timed(first_after, time.monotonic() - started, rest)
