"""Node clients, unchanged, against a running Tollgate: the official `openai` SDK (Chat
Completions, and Responses continued from the stored response), the official `@anthropic-ai/sdk`,
and the Vercel AI SDK with its OpenAI provider (Responses, its default, and Chat Completions) and
its Anthropic provider; each on a GPT, a Claude and a Gemini model, with a streamed answer and a
tool round trip. `run.mjs` is the application; the pinned packages are in package.json.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.clients.harness import (
    CLAUDE,
    GEMINI,
    GPT,
    HERE,
    Fakes,
    Gateway,
    assert_metered,
    clean_env,
    node_binary,
    run,
    which_node,
)

CLIENTS = {  # the client and the endpoint it calls
    "openai-chat": "/v1/chat/completions",
    "openai-responses": "/v1/responses",
    "anthropic": "/v1/messages",
    "ai-sdk-openai-responses": "/v1/responses",
    "ai-sdk-openai-chat": "/v1/chat/completions",
    "ai-sdk-anthropic": "/v1/messages",
}


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool"])
@pytest.mark.parametrize("model", [GPT, CLAUDE, GEMINI])
@pytest.mark.parametrize("client", list(CLIENTS))
def test_node_client(
    gateway: Gateway, fakes: Fakes, key: str, client: str, model: str, tools: bool,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:  # fmt: skip
    node_binary("anthropic-ai-sdk")  # the packages are installed (`npm ci`)
    home = tmp_path_factory.mktemp("home")
    mode = "tool" if tools else "text"
    done = run([which_node(), HERE / "run.mjs", client, gateway.url, key, model, mode],
               clean_env(home), cwd=HERE)  # fmt: skip
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    if tools:
        assert outcome["calls"] == [["get_weather", {"city": "Lisbon"}]]
        assert re.fullmatch(r'Tool result: .*"temp_c": ?21.*', outcome["text"]), outcome
    else:
        assert outcome == {"text": "pong-42", "calls": []}
    assert_metered(gateway, key, fakes, model, CLIENTS[client])
