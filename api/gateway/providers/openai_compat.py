"""OpenAI-compatible upstreams: OpenAI itself, DeepSeek, and any host speaking Chat Completions.

Reference: https://platform.openai.com/docs/api-reference/chat (Authorization: Bearer),
https://api-docs.deepseek.com/ (same shape; `: keep-alive` comments, usage on the finish chunk).
"""

from __future__ import annotations

from api.gateway.providers.native import HTTPProvider
from api.kit.http1 import HTTPClient, Timeouts


class OpenAICompatProvider(HTTPProvider):
    dialect = "openai"

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str,
        client: HTTPClient,
        timeouts: Timeouts,
        stream_timeouts: Timeouts,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"}
        super().__init__(name, base_url, headers, client, timeouts, stream_timeouts)
