// One cell of the compatibility suite with a Node client, as an application would write it.
//
//   node run.mjs CLIENT BASE_URL KEY MODEL text|tool
//
// Prints {"text": final answer, "calls": [[name, arguments], ...]} on stdout. "text" streams a
// short answer; "tool" offers get_weather, runs it when the model calls it, and sends the result
// back for the final answer (the AI SDK runs that loop itself).

import Anthropic from "@anthropic-ai/sdk";
import { createAnthropic } from "@ai-sdk/anthropic";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, isStepCount, jsonSchema, streamText, tool } from "ai";
import OpenAI from "openai";

const [client, baseURL, apiKey, model, mode] = process.argv.slice(2);
const SAY = "[[say pong-42]]";
const ASK = 'Weather in Lisbon? [[call get_weather {"city": "Lisbon"}]]';
const RESULT = '{"temp_c": 21}';
const CITY = {
  type: "object",
  properties: { city: { type: "string" } },
  required: ["city"],
};

async function openaiChat() {
  const openai = new OpenAI({ apiKey, baseURL: `${baseURL}/v1`, maxRetries: 0 });
  if (mode === "text") {
    const stream = await openai.chat.completions.create({
      model, messages: [{ role: "user", content: SAY }], stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
    return { text, calls: [] };
  }
  const tools = [{ type: "function", function: { name: "get_weather", parameters: CITY } }];
  const messages = [{ role: "user", content: ASK }];
  const first = await openai.chat.completions.create({ model, messages, tools });
  const message = first.choices[0].message;
  messages.push(message);
  for (const call of message.tool_calls ?? []) {
    messages.push({ role: "tool", tool_call_id: call.id, content: RESULT });
  }
  const final = await openai.chat.completions.create({ model, messages, tools });
  const calls = (message.tool_calls ?? []).map((c) => [c.function.name, JSON.parse(c.function.arguments)]);
  return { text: final.choices[0].message.content ?? "", calls };
}

async function openaiResponses() {
  const openai = new OpenAI({ apiKey, baseURL: `${baseURL}/v1`, maxRetries: 0 });
  if (mode === "text") {
    const stream = openai.responses.stream({ model, input: SAY });
    const final = await stream.finalResponse();
    return { text: final.output_text, calls: [] };
  }
  const tools = [{ type: "function", name: "get_weather", parameters: CITY, strict: false }];
  const first = await openai.responses.create({ model, input: ASK, tools });
  const calls = first.output.filter((item) => item.type === "function_call");
  // Continue from the stored response, as OpenAI's docs show.
  const final = await openai.responses.create({
    model, tools, previous_response_id: first.id,
    input: calls.map((c) => ({ type: "function_call_output", call_id: c.call_id, output: RESULT })),
  });
  return { text: final.output_text, calls: calls.map((c) => [c.name, JSON.parse(c.arguments)]) };
}

async function anthropic() {
  const claude = new Anthropic({ apiKey, baseURL, maxRetries: 0 });
  if (mode === "text") {
    const stream = claude.messages.stream({
      model, max_tokens: 256, messages: [{ role: "user", content: SAY }],
    });
    const final = await stream.finalMessage();
    return { text: final.content.filter((b) => b.type === "text").map((b) => b.text).join(""), calls: [] };
  }
  const tools = [{ name: "get_weather", input_schema: CITY }];
  const messages = [{ role: "user", content: ASK }];
  const first = await claude.messages.create({ model, max_tokens: 256, messages, tools });
  const uses = first.content.filter((b) => b.type === "tool_use");
  messages.push({ role: "assistant", content: first.content });
  messages.push({
    role: "user",
    content: uses.map((b) => ({ type: "tool_result", tool_use_id: b.id, content: RESULT })),
  });
  const final = await claude.messages.create({ model, max_tokens: 256, messages, tools });
  const text = final.content.filter((b) => b.type === "text").map((b) => b.text).join("");
  return { text, calls: uses.map((b) => [b.name, b.input]) };
}

async function aiSdk(languageModel) {
  if (mode === "text") {
    const result = streamText({ model: languageModel, prompt: SAY, maxRetries: 0 });
    let text = "";
    for await (const piece of result.textStream) text += piece;
    return { text, calls: [] };
  }
  const tools = {
    get_weather: tool({
      description: "The weather in a city.",
      inputSchema: jsonSchema(CITY),
      execute: async () => JSON.parse(RESULT),
    }),
  };
  const result = await generateText({
    model: languageModel, prompt: ASK, tools, stopWhen: isStepCount(2), maxRetries: 0,
  });
  const calls = result.steps.flatMap((step) => step.toolCalls.map((c) => [c.toolName, c.input]));
  return { text: result.text, calls };
}

const clients = {
  "openai-chat": openaiChat,
  "openai-responses": openaiResponses,
  anthropic,
  "ai-sdk-openai-responses": () =>
    aiSdk(createOpenAI({ apiKey, baseURL: `${baseURL}/v1` }).responses(model)),
  "ai-sdk-openai-chat": () => aiSdk(createOpenAI({ apiKey, baseURL: `${baseURL}/v1` }).chat(model)),
  "ai-sdk-anthropic": () => aiSdk(createAnthropic({ apiKey, baseURL: `${baseURL}/v1` })(model)),
};

try {
  process.stdout.write(JSON.stringify(await clients[client]()) + "\n");
} catch (error) {
  process.stderr.write(`${error?.stack ?? error}\n${JSON.stringify(error?.responseBody ?? error?.error ?? null)}\n`);
  process.exit(1);
}
