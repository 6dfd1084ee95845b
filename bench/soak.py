"""A soak: `python bench/soak.py` (or `make bench-soak`): 10 minutes of mixed traffic on one API
process and one worker, on throwaway PostgreSQL and Redis, against the benchmark's fake
upstream (`bench/upstream.py`, fixed usage per answer).

Eight clients, each with its own key, loop over (seeded, so every run sends the same mix): Chat
Completions plain and streamed, Anthropic Messages streamed, embeddings, a transcription, speech,
a thread turn that calls a webhook tool (two model calls and a tool call, run by the worker),
an async job, and reads of the key, usage and the request log. Each request's status is counted
per minute; the API's and the worker's RSS are sampled every 5 s.

At the end, once the worker has drained the ledger, the ledger must be exact: for every model,
the requests, tokens, audio seconds and characters in `/v1/usage` equal what the clients'
successful requests were answered with, one usage event per model call. The report gives the
RSS slope (least squares, MB per minute, after the first fifth), errors per minute, and
whether the ledger was exact; `--seconds 60` is the version the test suite runs
(`tests/e2e/test_soak.py`). Writes bench/results/soak-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402 - after the path is set
    CHUNKS,
    WORKER_PID,
    rss_mb,
    setup_gateway,
    start_upstream_and_floor,
    write_report,
)
from bench.units import BOUNDARY, SPEECH_TEXT, multipart, wav  # noqa: E402
from tools.testenv import free_port, services  # noqa: E402

CLIENTS = 8
HELLO = [{"role": "user", "content": "Hi"}]
# What the fake upstream bills each answer: (input tokens, output tokens).
CHAT, STREAM, MESSAGES = (12, 6), (12, CHUNKS), (12, CHUNKS)
EMBEDDING_TOKENS = 128
AUDIO_SECONDS = 5
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


class Workload:
    """What the clients sent and were answered, per model: the ledger's expected figures."""

    def __init__(self) -> None:
        self.expected: dict[str, Counter[str]] = {}
        self.statuses: list[Counter[int]] = []  # per minute
        self.started = time.monotonic()
        self.jobs: list[tuple[str, dict[str, str]]] = []

    def answered(self, status: int) -> None:
        minute = int((time.monotonic() - self.started) // 60)
        while len(self.statuses) <= minute:
            self.statuses.append(Counter())
        self.statuses[minute][status] += 1

    def billed(self, model: str, calls: int = 1, **figures: int) -> None:
        counter = self.expected.setdefault(model, Counter())
        counter["requests"] += calls
        for name, value in figures.items():
            counter[name] += value * calls


KINDS = ["chat", "stream", "messages", "embeddings", "transcription", "speech", "thread", "job",
         "read"]  # fmt: skip
WEIGHTS = [20, 20, 10, 10, 4, 4, 6, 4, 10]


async def client(index: int, base: str, master: str, work: Workload, until: float) -> None:
    rng = random.Random(index)  # the same mix on every run
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        made = await http.post(
            "/v1/keys", json={"name": f"soak-{index}", "max_spend_usd": 1000},
            headers={"Authorization": f"Bearer {master}"},
        )  # fmt: skip
        user = User(http, {"Authorization": f"Bearer {made.json()['secret']}"}, master, work)
        thread = await http.post("/v1/threads", json={}, headers=user.headers)
        user.thread_id = thread.json()["id"]
        while time.monotonic() < until:
            kind = rng.choices(KINDS, weights=WEIGHTS)[0]
            work.answered(await getattr(user, kind)())
            await asyncio.sleep(rng.random() * 0.02)


class User:
    """One client's requests, each recording what it was answered and returns its status."""

    def __init__(
        self, http: httpx.AsyncClient, headers: dict[str, str], master: str, work: Workload
    ) -> None:
        self.http, self.headers, self.work = http, headers, work
        self.master = {"Authorization": f"Bearer {master}"}
        self.thread_id = ""
        self.audio = multipart({"model": "whisper-1"}, "file", "speech.wav", wav())

    async def _post(self, path: str, body: dict[str, Any]) -> int:
        return (await self.http.post(path, headers=self.headers, json=body)).status_code

    async def _stream(self, path: str, body: dict[str, Any], end: str) -> int:
        async with self.http.stream("POST", path, headers=self.headers, json=body) as answer:
            text = (await answer.aread()).decode()
        if answer.status_code != 200:
            return answer.status_code
        return 200 if end in text else 599  # a stream that did not end well

    async def chat(self) -> int:
        status = await self._post(
            "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO}
        )
        if status == 200:
            self.work.billed("gpt-4o-mini", input_tokens=CHAT[0], output_tokens=CHAT[1])
        return status

    async def stream(self) -> int:
        body = {"model": "gpt-4.1-mini", "messages": HELLO, "stream": True}
        status = await self._stream("/v1/chat/completions", body, "data: [DONE]")
        if status == 200:
            self.work.billed("gpt-4.1-mini", input_tokens=STREAM[0], output_tokens=STREAM[1])
        return status

    async def messages(self) -> int:
        body = {"model": "claude-sonnet-4", "max_tokens": 1024, "messages": HELLO, "stream": True}
        status = await self._stream("/v1/messages", body, "message_stop")
        if status == 200:  # the ledger names the model the alias resolves to
            model = "claude-sonnet-4-20250514"
            self.work.billed(model, input_tokens=MESSAGES[0], output_tokens=MESSAGES[1])
        return status

    async def embeddings(self) -> int:
        texts = [f"input {n}" for n in range(16)]
        body = {"model": "text-embedding-3-small", "input": texts}
        status = await self._post("/v1/embeddings", body)
        if status == 200:
            self.work.billed("text-embedding-3-small", input_tokens=EMBEDDING_TOKENS)
        return status

    async def transcription(self) -> int:
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
        answer = await self.http.post(
            "/v1/audio/transcriptions", content=self.audio,
            headers={**self.headers, "Content-Type": content_type},
        )  # fmt: skip
        if answer.status_code == 200:
            self.work.billed("whisper-1", audio_seconds=AUDIO_SECONDS)
        return answer.status_code

    async def speech(self) -> int:
        body = {"model": "tts-1", "voice": "alloy", "input": SPEECH_TEXT}
        status = await self._post("/v1/audio/speech", body)
        if status == 200:
            self.work.billed("tts-1", characters=len(SPEECH_TEXT))
        return status

    async def thread(self) -> int:  # the model calls the tool, the worker runs it, it answers
        body = {"model": "gpt-4o", "content": "Weather in Paris?", "tools": ["get_weather"]}
        status = await self._post(f"/v1/threads/{self.thread_id}/messages", body)
        if status == 200:
            self.work.billed("gpt-4o", calls=2, input_tokens=CHAT[0], output_tokens=CHAT[1])
        return status

    async def job(self) -> int:
        body = {"model": "gpt-4.1", "messages": HELLO}
        job = {"endpoint": "/v1/chat/completions", "body": body}
        answer = await self.http.post("/v1/jobs", headers=self.headers, json=job)
        if answer.status_code != 202:
            return answer.status_code
        self.work.jobs.append((answer.json()["id"], self.headers))
        return 200

    async def read(self) -> int:  # the key itself, the tenant's usage and request log
        for path, headers in (("/v1/keys/self", self.headers), ("/v1/usage", self.master),
                              ("/v1/logs?limit=20", self.master)):  # fmt: skip
            status = (await self.http.get(path, headers=headers)).status_code
            if status != 200:
                return status
        return 200


async def _tools(port: int) -> web.AppRunner:
    """The webhook the soak's tool calls: answers every call."""

    async def weather(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"content": "Sunny, 21 C."})

    app = web.Application()
    app.router.add_post("/weather", weather)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def _sample(pids: dict[str, int], samples: list[dict[str, float]], until: float) -> None:
    started = time.monotonic()
    while time.monotonic() < until:
        samples.append({"t": time.monotonic() - started, **{n: rss_mb(p) for n, p in pids.items()}})
        await asyncio.sleep(5)


async def _settle(base: str, master: str, work: Workload) -> dict[str, Any]:
    """Wait for every job and for the ledger to count every model call; the usage per model."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for job_id, headers in work.jobs:
            for _ in range(600):
                body = (await http.get(f"/v1/jobs/{job_id}", headers=headers)).json()
                if body["status"] in ("succeeded", "failed", "cancelled"):
                    break
                await asyncio.sleep(0.1)
            if body["status"] == "succeeded":
                work.billed("gpt-4.1", input_tokens=CHAT[0], output_tokens=CHAT[1])
            work.answered(200 if body["status"] == "succeeded" else 598)
        wanted = sum(c["requests"] for c in work.expected.values())
        headers = {"Authorization": f"Bearer {master}"}
        rows: dict[str, Any] = {}
        for _ in range(600):
            usage = await http.get("/v1/usage", params={"group_by": "model"}, headers=headers)
            rows = {row["model"]: row for row in usage.json()["by_model"]}
            if sum(row["requests"] for row in rows.values()) >= wanted:
                break
            await asyncio.sleep(0.2)
        return rows


def _exact(rows: dict[str, Any], work: Workload) -> list[str]:
    """What differs between the ledger and what the clients were answered (empty: exact)."""
    wrong = []
    for model in sorted(set(rows) | set(work.expected)):
        expected, row = work.expected.get(model, Counter()), rows.get(model, {})
        for name in ("requests", "input_tokens", "output_tokens", "audio_seconds", "characters"):
            if int(row.get(name) or 0) != expected[name]:
                wrong.append(f"{model} {name}: ledger {row.get(name)}, answered {expected[name]}")
    return wrong


def _slope(samples: list[dict[str, float]], name: str) -> float:
    """MB per minute, least squares over the samples after the first fifth (the warm-up)."""
    kept = samples[len(samples) // 5 :]
    if len(kept) < 2:
        return 0.0
    xs, ys = [s["t"] / 60 for s in kept], [s[name] for s in kept]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def soak(seconds: int) -> dict[str, Any]:
    with ExitStack() as stack:
        urls = stack.enter_context(services())
        upstream, _, _, _ = start_upstream_and_floor(stack)
        base, api_pid, _ = setup_gateway(
            urls["TOLLGATE_TEST_POSTGRES_URL"], urls["TOLLGATE_TEST_REDIS_URL"], upstream, stack,
            # The tool's webhook listens on loopback. Search has its own bench (its model
            # would load into the worker here).
            TOLLGATE_ALLOW_PRIVATE_WEBHOOKS="true", TOLLGATE_SEARCH_ENABLED="false",
        )  # fmt: skip
        return asyncio.run(_run(base, api_pid, WORKER_PID[-1], seconds))


async def _run(base: str, api_pid: int, worker_pid: int, seconds: int) -> dict[str, Any]:
    port = free_port()
    tools = await _tools(port)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            tenant = await http.post(
                "/admin/tenants", json={"name": "soak"},
                headers={"Authorization": "Bearer bench-admin"},
            )  # fmt: skip
            master = tenant.json()["master_key"]
            made = await http.post(
                "/v1/tools", headers={"Authorization": f"Bearer {master}"},
                json={"name": "get_weather", "input_schema": WEATHER,
                      "webhook_url": f"http://127.0.0.1:{port}/weather"},
            )  # fmt: skip
            made.raise_for_status()
        work = Workload()
        until = time.monotonic() + seconds
        samples: list[dict[str, float]] = []
        pids = {"api": api_pid, "worker": worker_pid}
        sampler = asyncio.create_task(_sample(pids, samples, until))
        await asyncio.gather(*(client(n, base, master, work, until) for n in range(CLIENTS)))
        await sampler
        rows = await _settle(base, master, work)
    finally:
        await tools.cleanup()
    wrong = _exact(rows, work)
    errors = [sum(n for s, n in minute.items() if s >= 400) for minute in work.statuses]
    return {
        "seconds": seconds,
        "clients": CLIENTS,
        "requests": sum(sum(minute.values()) for minute in work.statuses),
        "per_minute": [dict(minute) for minute in work.statuses],
        "errors_per_minute": errors,
        "rss_mb": samples,
        "api_rss_slope_mb_per_min": _slope(samples, "api"),
        "worker_rss_slope_mb_per_min": _slope(samples, "worker"),
        "api_rss_mb_first_last": [samples[0]["api"], samples[-1]["api"]] if samples else [],
        "ledger_exact": not wrong,
        "ledger_differences": wrong,
        "usage_by_model": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=600)
    args = parser.parse_args()
    report = soak(args.seconds)
    print(
        f"{report['requests']} requests in {args.seconds} s by {CLIENTS} clients; errors per "
        f"minute {report['errors_per_minute']}; API RSS {report['api_rss_mb_first_last']} MB, "
        f"slope {report['api_rss_slope_mb_per_min']:+.2f} MB/min (worker "
        f"{report['worker_rss_slope_mb_per_min']:+.2f}); ledger exact: {report['ledger_exact']}"
    )
    for line in report["ledger_differences"]:
        print("  " + line)
    write_report(report, "soak-")


if __name__ == "__main__":
    main()
