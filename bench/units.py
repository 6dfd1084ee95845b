"""Embeddings and audio: `python bench/units.py` (or `make bench-units`).

The same setup as `bench/run.py` (whose helpers this uses): throwaway PostgreSQL and Redis, the
fake upstream, the floor (a bare pass-through proxy) and Tollgate on PostgreSQL + Redis with a
live key (spend cap, rpm/tpm, reservation and metering on) and `tollgate worker` draining the
ledger. For each endpoint, wrk drives the upstream directly, the floor and the gateway, closed
loop at 1 and 16 connections, interleaved (each endpoint and connection count runs against the
three targets back to back, so they see the same machine):
- `embeddings`: `POST /v1/embeddings`, 16 short strings on text-embedding-3-small; the answer
  is 16 vectors of 1536 floats (~350 KB of JSON).
- `transcription`: `POST /v1/audio/transcriptions`, a 5-second 16 kHz mono WAV (160 KB,
  multipart) on whisper-1; the upstream answers `verbose_json` with 5 seconds of usage.
- `speech`: `POST /v1/audio/speech` on tts-1; the upstream answers 208 KB of audio in 16 KB
  chunks, relayed as they arrive.

CPU per request = the target process's CPU seconds (from /proc) / requests served in that run.
Prints a table and writes bench/results/units-<time>.json, with the gateway's RSS at start,
after 20 warm-up requests per endpoint and target, and after the run.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import struct
import sys
import tempfile
import wave
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402 - after the path is set
    WORKER_PID,
    WRK_SCRIPT,
    cpu_seconds,
    rss_mb,
    run_wrk,
    setup_gateway,
    start_upstream_and_floor,
    write_report,
)
from bench.upstream import SPEECH_CHUNKS  # noqa: E402
from tools.testenv import services  # noqa: E402

TARGETS = ("direct", "floor", "gateway")
ENDPOINTS = ("embeddings", "transcription", "speech")
CONNECTIONS = (1, 16)
BOUNDARY = "tollgate-bench-boundary"
SPEECH_TEXT = "Hello from the bench. " * 10


def wav(seconds: int = 5, rate: int = 16_000) -> bytes:
    """A mono 16-bit PCM WAV: a 440 Hz tone."""
    samples = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / rate)))
        for n in range(seconds * rate)
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(samples)
    return out.getvalue()


def multipart(fields: dict[str, str], name: str, filename: str, data: bytes) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"'
        "\r\nContent-Type: audio/wav\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def scenarios() -> dict[str, dict[str, Any]]:
    """Each endpoint: its path, body and content type."""
    texts = [f"Short input number {n} for the embedding bench." for n in range(16)]
    return {
        "embeddings": {
            "path": "/v1/embeddings",
            "body": json.dumps({"model": "text-embedding-3-small", "input": texts}).encode(),
            "content_type": "application/json",
        },
        "transcription": {
            "path": "/v1/audio/transcriptions",
            "body": multipart({"model": "whisper-1"}, "file", "speech.wav", wav()),
            "content_type": f"multipart/form-data; boundary={BOUNDARY}",
        },
        "speech": {
            "path": "/v1/audio/speech",
            "body": json.dumps({"model": "tts-1", "voice": "alloy", "input": SPEECH_TEXT}).encode(),
            "content_type": "application/json",
        },
    }


def check(url: str, body: bytes, content_type: str, key: str, count: int) -> int:
    """A few requests before timing (warming the target): each must succeed. Returns the size of
    the last answer."""
    headers = {"content-type": content_type}
    if key:
        headers["authorization"] = f"Bearer {key}"
    size = 0
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            response = client.post(url, content=body, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code} {response.text[:500]}")
            size = len(response.content)
    return size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
        "duration_s": args.duration,
        "runs": {},
    }
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        urls = stack.enter_context(services())
        upstream, up, floor_url, floor = start_upstream_and_floor(stack)
        gateway, gateway_pid, key = setup_gateway(
            urls["TOLLGATE_TEST_POSTGRES_URL"], urls["TOLLGATE_TEST_REDIS_URL"], upstream, stack
        )
        targets = {
            "direct": (upstream, up.pid, ""),
            "floor": (floor_url, floor.pid, ""),
            "gateway": (gateway, gateway_pid, key),
        }
        report["gateway_rss_mb_start"] = rss_mb(gateway_pid)
        bodies = scenarios()
        for name, scenario in bodies.items():
            body_file = Path(tmp) / f"{name}.body"
            body_file.write_bytes(scenario["body"])
            scenario["body_file"] = body_file
            for target, (base, _, secret) in targets.items():
                size = check(base + scenario["path"], scenario["body"],
                             scenario["content_type"], secret, 20)  # fmt: skip
                print(f"  {name:13} {target:8} answers {size} bytes", flush=True)
        report["gateway_rss_mb_before"] = rss_mb(gateway_pid)
        served = 0
        worker_before = cpu_seconds(WORKER_PID[0])
        for name, scenario in bodies.items():
            for connections in CONNECTIONS:
                for target, (base, pid, secret) in targets.items():
                    before = cpu_seconds(pid)
                    row: dict[str, Any] = run_wrk(
                        base + scenario["path"], script, connections, args.duration, "", secret,
                        content_type=scenario["content_type"], body_file=scenario["body_file"],
                    )  # fmt: skip
                    cpu = cpu_seconds(pid) - before
                    row["cpu_ms_per_request"] = cpu * 1000 / max(row["requests"], 1)
                    if name == "speech":
                        chunks = row["requests"] * SPEECH_CHUNKS
                        row["cpu_us_per_chunk"] = cpu * 1e6 / max(chunks, 1)
                    if target == "gateway":
                        served += int(row["requests"])
                    report["runs"][f"{name}_c{connections}_{target}"] = row
                    print(f"  {name:13} c={connections:<3} {target:8} {row}", flush=True)
        report["worker_cpu_ms_per_request"] = (
            (cpu_seconds(WORKER_PID[0]) - worker_before) * 1000 / max(served, 1)
        )
        report["gateway_rss_mb_after"] = rss_mb(gateway_pid)
    print_table(report)
    write_report(report, "units-")


def print_table(report: dict[str, Any]) -> None:
    runs = report["runs"]
    print(
        "\n| endpoint | conns | target | req/s | p50 ms | p99 ms | CPU ms/req "
        "| CPU vs floor | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in ENDPOINTS:
        for connections in CONNECTIONS:
            floor = runs[f"{name}_c{connections}_floor"]["cpu_ms_per_request"]
            for target in TARGETS:
                row = runs[f"{name}_c{connections}_{target}"]
                ratio = f"{row['cpu_ms_per_request'] / floor:.1f}x" if floor else ""
                print(
                    f"| {name} | {connections} | {target} | {row['rps']:.0f} "
                    f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                    f"| {row['cpu_ms_per_request']:.3f} | {ratio} | {row['errors']} |"
                )
    print(
        f"\ngateway RSS {report['gateway_rss_mb_start']:.0f} MB at start, "
        f"{report['gateway_rss_mb_before']:.0f} MB after the warm-up requests, "
        f"{report['gateway_rss_mb_after']:.0f} MB after; worker (ledger drain) CPU per gateway "
        f"request {report['worker_cpu_ms_per_request']:.3f} ms"
    )


if __name__ == "__main__":
    main()
