"""An open-loop paced load: `rate` requests/s spread evenly over `connections` keep-alive
connections, each sending on its own schedule (connection i at t0 + i·p/n + k·p, where p is
its period), the way wrk2 paces.

wrk's own pacing (`delay()` after each response) starts every connection at once and keeps
them in step, so its "500 requests/s" arrives as bursts of 16 requests every 32 ms; the p99 it
reports is then the time to serve a whole burst. Here each latency is measured from the
request's scheduled time, not from when it went out, so a server that falls behind is charged
for the wait too (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp


async def _connection(
    url: str,
    body: bytes,
    headers: dict[str, str],
    first: float,
    period: float,
    until: float,
    samples: list[float],
    errors: list[int],
) -> None:
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        due = first
        while due < until:
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    errors.append(response.status)
            samples.append((time.perf_counter() - due) * 1000)
            due += period


async def _run(
    url: str, body: bytes, key: str, rate: float, connections: int, seconds: float
) -> dict[str, Any]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    period = connections / rate
    samples: list[float] = []
    errors: list[int] = []
    start = time.perf_counter() + 0.2
    until = start + seconds
    offsets = [start + i * period / connections for i in range(connections)]
    await asyncio.gather(
        *(
            _connection(url, body, headers, first, period, until, samples, errors)
            for first in offsets
        )
    )
    elapsed = time.perf_counter() - start
    samples.sort()
    return {
        "p50_ms": samples[len(samples) // 2],
        "p99_ms": samples[int(len(samples) * 0.99) - 1],
        "requests": len(samples),
        "rps": len(samples) / elapsed,
        "errors": len(errors),
    }


def paced(
    url: str, body: str, key: str, *, rate: float = 500, connections: int = 16, seconds: float = 8
) -> dict[str, Any]:
    """p50/p99 latency (ms, from each request's scheduled time) at an evenly paced rate."""
    import uvloop

    warm = _run(url, body.encode(), key, rate, connections, 1.0)
    uvloop.run(warm)
    return uvloop.run(_run(url, body.encode(), key, rate, connections, seconds))
