"""The upstream client A/B: our `HTTPClient` (api/kit/http1.py) against aiohttp's `ClientSession`,
in one process on uvloop (as `tollgate serve` runs), calling the benchmark's fake upstream
(bench/upstream.py, its own process) on loopback.

Measured, per client, in alternating rounds so both see the same machine: CPU per non-streaming
request (read whole) at 1 and 16 concurrent requests, and CPU per SSE event read and parsed
(`api/gateway/sse.parse_sse` for both) for streams whose events arrive back to back and 1 ms
apart (one per read, as a model's tokens come). CPU is this process's (user + system) over the
round; the upstream's is not counted. Both clients get the gateway's timeouts.

`python bench/client_ab.py` (starts its own upstream), or `--upstream URL`; `--json` prints the
result as JSON (bench/run.py runs it that way). A few seconds in all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.gateway.sse import parse_sse  # noqa: E402 - after the path is set
from api.kit.http1 import HTTPClient, Timeouts  # noqa: E402
from tools.testenv import free_port  # noqa: E402

PATH = "/v1/chat/completions"
BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})
STREAM = json.dumps({**json.loads(BODY), "stream": True})
SPACED = json.dumps({**json.loads(BODY), "stream": True, "bench_spaced": True})
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
# Runs: (name, body, streamed, concurrency, requests per round).
RUNS = [
    ("plain_c1", BODY, False, 1, 1000),
    ("plain_c16", BODY, False, 16, 3000),
    ("stream_c16", STREAM, True, 16, 300),
    ("spaced_stream_c16", SPACED, True, 16, 64),
]
ROUNDS = 3

Call = Callable[[str], Awaitable[int]]  # one request with this body → SSE events read (0 if none)


class Ours:
    name = "http1"

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = HTTPClient(max_connections=64)
        self.timeouts = Timeouts(connect=10, read=300, total=900, pool=10)
        self.stream_timeouts = Timeouts(connect=10, read=300, pool=10)

    async def call(self, body: str) -> int:
        streamed = '"stream": true' in body
        response = await self.client.request(
            "POST", self.url, headers=HEADERS, body=body.encode(),
            timeouts=self.stream_timeouts if streamed else self.timeouts,
        )  # fmt: skip
        try:
            if not streamed:
                await response.read()
                return 0
            return await _count(parse_sse(response.chunks()))
        finally:
            response.release()

    async def close(self) -> None:
        await self.client.close()


class Aiohttp:
    name = "aiohttp"

    def __init__(self, url: str) -> None:
        self.url = url
        connector = aiohttp.TCPConnector(limit=64)
        self.session = aiohttp.ClientSession(connector=connector)
        self.timeout = aiohttp.ClientTimeout(total=900, sock_connect=10, sock_read=300)
        self.stream_timeout = aiohttp.ClientTimeout(sock_connect=10, sock_read=300)

    async def call(self, body: str) -> int:
        streamed = '"stream": true' in body
        timeout = self.stream_timeout if streamed else self.timeout
        async with self.session.post(
            self.url, data=body.encode(), headers=HEADERS, timeout=timeout
        ) as response:
            if not streamed:
                await response.read()
                return 0
            return await _count(parse_sse(response.content.iter_any()))

    async def close(self) -> None:
        await self.session.close()


async def _count(events: AsyncIterator[Any]) -> int:
    count = 0
    async for _ in events:
        count += 1
    return count


async def _round(call: Call, body: str, concurrency: int, requests: int) -> tuple[float, int]:
    """CPU seconds this process spent on `requests` calls, `concurrency` at a time."""
    left = requests
    events = 0

    async def worker() -> None:
        nonlocal left, events
        while left > 0:
            left -= 1
            got = await call(body)  # (not `events += await ...`: that reads `events` first)
            events += got

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.process_time() - cpu, events


async def measure(url: str) -> dict[str, Any]:
    clients = [Ours(url + PATH), Aiohttp(url + PATH)]
    samples: dict[str, dict[str, list[float]]] = {c.name: {} for c in clients}
    try:
        for client in clients:  # warm up: connections open, code paths taken
            for _, body, _, concurrency, _ in RUNS:
                await _round(client.call, body, concurrency, 2 * concurrency)
        for round_ in range(ROUNDS):
            for name, body, streamed, concurrency, requests in RUNS:
                order = clients if round_ % 2 == 0 else clients[::-1]
                for client in order:
                    cpu, events = await _round(client.call, body, concurrency, requests)
                    per = cpu * 1e6 / events if streamed else cpu * 1e3 / requests
                    samples[client.name].setdefault(name, []).append(per)
    finally:
        for client in clients:
            await client.close()
    result: dict[str, Any] = {}
    for name, _, streamed, _, _ in RUNS:
        unit = "cpu_us_per_event" if streamed else "cpu_ms_per_request"
        ours = statistics.median(samples["http1"][name])
        theirs = statistics.median(samples["aiohttp"][name])
        result[name] = {"unit": unit, "http1": ours, "aiohttp": theirs, "ratio": ours / theirs}
    return result


def print_table(result: dict[str, Any]) -> None:
    print("\n| client A/B (median of 3 rounds) | unit | http1 | aiohttp | http1 / aiohttp |")
    print("|---|---|---|---|---|")
    for name, row in result.items():
        digits = 1 if row["unit"] == "cpu_us_per_event" else 3
        print(
            f"| {name} | {row['unit']} | {row['http1']:.{digits}f} | {row['aiohttp']:.{digits}f} "
            f"| {row['ratio']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--upstream", help="a running bench/upstream.py (else one is started)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    upstream = None
    url = args.upstream
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, str(ROOT / "bench/upstream.py"), "--port", str(port)]
        upstream = subprocess.Popen(command)
        _wait(port)
    try:
        result = uvloop.run(measure(url))
    finally:
        if upstream is not None:
            upstream.terminate()
            upstream.wait()
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)


def _wait(port: int) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the fake upstream did not come up")


if __name__ == "__main__":
    main()
