"""Python clients, unchanged, against a running Tollgate: the official `openai` SDK (Chat
Completions and Responses), the official `anthropic` SDK, LangChain's OpenAI and Anthropic chat
models, and Google's `google-genai` SDK, each on a GPT, a Claude and a Gemini model, with a
streamed text answer and a tool round trip (the client runs the tool and sends its result back).
Each cell checks the answer and that Tollgate metered every call at what the upstream reported.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as genai_types
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.e2e.clients.harness import CLAUDE, GEMINI, GPT, Fakes, Gateway, assert_metered

SAY = "[[say pong-42]]"
ASK = 'Weather in Lisbon? [[call get_weather {"city": "Lisbon"}]]'
RESULT = '{"temp_c": 21}'
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@dataclass
class Outcome:
    text: str  # the final answer
    calls: list[tuple[str, dict[str, Any]]]  # the tool calls the client received, parsed


def _openai_chat(url: str, key: str, model: str, tools: bool) -> Outcome:
    with openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0) as client:
        if not tools:
            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": SAY}], stream=True,
                stream_options={"include_usage": True},
            )  # fmt: skip
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            return Outcome(text, [])
        offered = [{"type": "function", "function": {"name": "get_weather", "parameters": CITY}}]
        messages: list[Any] = [{"role": "user", "content": ASK}]
        first = client.chat.completions.create(model=model, messages=messages, tools=offered)  # type: ignore[arg-type]
        calls = first.choices[0].message.tool_calls or []
        messages.append(first.choices[0].message.model_dump(exclude_none=True))
        messages += [{"role": "tool", "tool_call_id": c.id, "content": RESULT} for c in calls]
        final = client.chat.completions.create(model=model, messages=messages, tools=offered)  # type: ignore[arg-type]
        parsed = [(c.function.name, json.loads(c.function.arguments)) for c in calls]  # type: ignore[union-attr]
        return Outcome(final.choices[0].message.content or "", parsed)


def _openai_responses(url: str, key: str, model: str, tools: bool) -> Outcome:
    with openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0) as client:
        if not tools:
            with client.responses.stream(model=model, input=SAY) as events:
                return Outcome(events.get_final_response().output_text, [])
        offered: list[Any] = [{"type": "function", "name": "get_weather", "parameters": CITY,
                               "strict": False}]  # fmt: skip
        first = client.responses.create(model=model, input=ASK, tools=offered, store=False)
        items: list[Any] = [{"role": "user", "content": ASK}]
        calls = [item for item in first.output if item.type == "function_call"]
        for call in calls:
            items.append({"type": "function_call", "call_id": call.call_id, "name": call.name,
                          "arguments": call.arguments})  # fmt: skip
            items.append({"type": "function_call_output", "call_id": call.call_id,
                          "output": RESULT})  # fmt: skip
        final = client.responses.create(model=model, input=items, tools=offered, store=False)
        return Outcome(final.output_text, [(c.name, json.loads(c.arguments)) for c in calls])


def _anthropic(url: str, key: str, model: str, tools: bool) -> Outcome:
    with anthropic.Anthropic(api_key=key, base_url=url, max_retries=0) as client:
        if not tools:
            with client.messages.stream(
                model=model, max_tokens=256, messages=[{"role": "user", "content": SAY}]
            ) as events:
                return Outcome("".join(events.text_stream), [])
        offered: list[Any] = [{"name": "get_weather", "input_schema": CITY}]
        messages: list[Any] = [{"role": "user", "content": ASK}]
        first = client.messages.create(model=model, max_tokens=256, messages=messages,
                                       tools=offered)  # fmt: skip
        uses = [b for b in first.content if b.type == "tool_use"]
        messages.append({"role": "assistant", "content": [b.model_dump() for b in first.content]})
        results = [{"type": "tool_result", "tool_use_id": b.id, "content": RESULT} for b in uses]
        messages.append({"role": "user", "content": results})
        final = client.messages.create(model=model, max_tokens=256, messages=messages,
                                       tools=offered)  # fmt: skip
        text = "".join(b.text for b in final.content if b.type == "text")
        return Outcome(text, [(b.name, dict(b.input)) for b in uses])  # type: ignore[arg-type]


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return RESULT


def _langchain(chat: Any, tools: bool) -> Outcome:
    if not tools:
        return Outcome("".join(str(chunk.content) for chunk in chat.stream(SAY)), [])
    bound = chat.bind_tools([get_weather])
    messages: list[Any] = [HumanMessage(ASK)]
    first = bound.invoke(messages)
    messages.append(first)
    for call in first.tool_calls:
        messages.append(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]))
    final = bound.invoke(messages)
    text = final.content if isinstance(final.content, str) else final.text
    return Outcome(text, [(c["name"], c["args"]) for c in first.tool_calls])


def _langchain_openai(url: str, key: str, model: str, tools: bool) -> Outcome:
    chat = ChatOpenAI(model=model, api_key=key, base_url=f"{url}/v1", max_retries=0)  # type: ignore[arg-type]
    return _langchain(chat, tools)


def _langchain_anthropic(url: str, key: str, model: str, tools: bool) -> Outcome:
    chat = ChatAnthropic(model=model, api_key=key, base_url=url, max_retries=0)  # type: ignore[arg-type]
    return _langchain(chat, tools)


def _google_genai(url: str, key: str, model: str, tools: bool) -> Outcome:
    client = genai.Client(api_key=key, http_options=genai_types.HttpOptions(base_url=url))
    if not tools:
        chunks = client.models.generate_content_stream(model=model, contents=SAY)
        return Outcome("".join(chunk.text or "" for chunk in chunks), [])
    declaration = genai_types.FunctionDeclaration(
        name="get_weather", parameters_json_schema=CITY, description="The weather in a city."
    )
    config = genai_types.GenerateContentConfig(
        tools=[genai_types.Tool(function_declarations=[declaration])],
        automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True),
    )
    contents: list[Any] = [genai_types.Content(role="user", parts=[genai_types.Part(text=ASK)])]
    first = client.models.generate_content(model=model, contents=contents, config=config)
    calls = first.function_calls or []
    assert first.candidates
    assert first.candidates[0].content
    contents.append(first.candidates[0].content)
    contents.append(genai_types.Content(role="user", parts=[
        genai_types.Part.from_function_response(name=c.name or "", response=json.loads(RESULT))
        for c in calls]))  # fmt: skip
    final = client.models.generate_content(model=model, contents=contents, config=config)
    return Outcome(final.text or "", [(c.name or "", dict(c.args or {})) for c in calls])


Client = Callable[[str, str, str, bool], Outcome]
GOOGLE = ("/v1beta/models/{model}:generateContent", "/v1beta/models/{model}:streamGenerateContent")
CLIENTS: dict[str, tuple[Client, tuple[str, ...]]] = {  # the client and the endpoints it calls
    "openai-chat": (_openai_chat, ("/v1/chat/completions",)),
    "openai-responses": (_openai_responses, ("/v1/responses",)),
    "anthropic": (_anthropic, ("/v1/messages",)),
    "langchain-openai": (_langchain_openai, ("/v1/chat/completions",)),
    "langchain-anthropic": (_langchain_anthropic, ("/v1/messages",)),
    "google-genai": (_google_genai, GOOGLE),
}


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool"])
@pytest.mark.parametrize("model", [GPT, CLAUDE, GEMINI])
@pytest.mark.parametrize("client", list(CLIENTS))
def test_python_client(
    gateway: Gateway, fakes: Fakes, key: str, client: str, model: str, tools: bool
) -> None:
    run, endpoints = CLIENTS[client]
    outcome = run(gateway.url, key, model, tools)
    if tools:
        assert outcome.calls == [("get_weather", {"city": "Lisbon"})]
        # The model quotes the result it was sent (re-serialised where a family sends objects).
        assert re.fullmatch(r'Tool result: .*"temp_c": ?21.*', outcome.text), outcome.text
    else:
        assert outcome.calls == []
        assert outcome.text == "pong-42"
    assert_metered(gateway, key, fakes, model, *endpoints)
