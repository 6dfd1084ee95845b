"""Request pieces shared by the proxy tests."""

from __future__ import annotations

from typing import Any

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
