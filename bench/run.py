"""One command: `python bench/run.py` (or `make bench`).

Starts throwaway PostgreSQL and Redis, a fake upstream, the floor (a bare aiohttp pass-through
proxy) and Tollgate on PostgreSQL + Redis with auth, access control, the spend cap, rpm/tpm
and metering on, plus `tollgate worker` draining the usage ledger (as docker-compose runs it);
drives each with wrk at 1, 16 and 64 connections, non-streaming and streaming (and streaming
at 16 with the upstream's events 1 ms apart), plus 500 requests/s over 16 connections paced
two ways: by wrk (bursts of 16) and evenly (`bench/paced.py`, latency from each request's
scheduled time); then the upstream client A/B (`bench/client_ab.py`: our HTTP client against
aiohttp's, CPU per request and per SSE event); prints a table and writes
bench/results/<time>.json.

CPU per request = the target process's CPU seconds (from /proc) / requests served, measured in
the same run as the latencies; the machine is shared, so read ratios beside the raw numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.client_ab import print_table as print_client_ab  # noqa: E402 - after the path is set
from bench.paced import paced  # noqa: E402
from tools.testenv import free_port, services  # noqa: E402

PYTHON = sys.executable
TOLLGATE = str(Path(sys.executable).with_name("tollgate"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})
STREAM_BODY = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
)
# The fake upstream spaces its events for a body that says `"bench_spaced": true` anywhere; in
# `metadata`, a field the gateway forwards (an unknown top-level one it drops).
SPACED_BODY = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "stream": True,
     "metadata": {"bench_spaced": True}}
)  # fmt: skip
MESSAGES_BODY = json.dumps(
    {
        "model": "claude-sonnet-4",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
    }
)
CHUNKS = 50
WORKER_PID: list[int] = []
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
  local file = assert(io.open(body_file, "rb"))
  wrk.body = file:read("*a")
  file:close()
end
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
local pace = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
if pace > 0 then function delay() return pace end end
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_http(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(
    url: str,
    script: Path,
    connections: int,
    seconds: int,
    body: str,
    key: str,
    pace_ms: int = 0,
    content_type: str = "application/json",
    body_file: Path | None = None,
) -> dict[str, float]:
    """`body_file` (read whole, any bytes) replaces `body` when given."""
    env = {
        **os.environ, "BENCH_BODY": body, "BENCH_KEY": key, "BENCH_DELAY_MS": str(pace_ms),
        "BENCH_CONTENT_TYPE": content_type, "BENCH_BODY_FILE": str(body_file or ""),
    }  # fmt: skip
    threads = 1 if connections == 1 else 2
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-s", str(script), url],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "p50_ms": _ms(percentiles["50"]),
        "p99_ms": _ms(percentiles["99"]),
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
    }


async def ttfb(url: str, key: str, count: int) -> dict[str, float]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    samples: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            started = time.perf_counter()
            async with session.post(url, data=STREAM_BODY, headers=headers) as response:
                await response.content.readany()
                samples.append((time.perf_counter() - started) * 1000)
                await response.read()
    samples.sort()
    return {
        "ttfb_p50_ms": samples[len(samples) // 2],
        "ttfb_p99_ms": samples[int(len(samples) * 0.99) - 1],
    }


def measure(
    name: str, url: str, pid: int | None, script: Path, key: str, args: argparse.Namespace
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for streaming in (False, True):
        body = STREAM_BODY if streaming else BODY
        for connections in (1, 16, 64):
            before = cpu_seconds(pid) if pid else 0.0
            row = run_wrk(url, script, connections, args.duration, body, key)
            if pid:
                cpu = cpu_seconds(pid) - before
                row["cpu_ms_per_request"] = cpu * 1000 / max(row["requests"], 1)
                if streaming:
                    row["cpu_us_per_chunk"] = cpu * 1e6 / max(row["requests"] * (CHUNKS + 4), 1)
                row["rss_mb"] = rss_mb(pid)
            results[f"{'stream' if streaming else 'plain'}_c{connections}"] = row
            print(
                f"  {name:8} {'stream' if streaming else 'plain '} c={connections:<3} {row}",
                flush=True,
            )
    # Events 1 ms apart, one per read (above, the upstream's events arrive several at a time).
    before = cpu_seconds(pid) if pid else 0.0
    row = run_wrk(url, script, 16, args.duration, SPACED_BODY, key)
    if pid:
        cpu = cpu_seconds(pid) - before
        row["cpu_ms_per_request"] = cpu * 1000 / max(row["requests"], 1)
        row["cpu_us_per_chunk"] = cpu * 1e6 / max(row["requests"] * (CHUNKS + 4), 1)
    results["spaced_stream_c16"] = row
    print(f"  {name:8} spaced stream c=16 {row}", flush=True)
    # Anthropic's format relayed natively (`POST /v1/messages`, as coding agents call it).
    messages_url = url.rsplit("/v1/", 1)[0] + "/v1/messages"
    for connections in (1, 16):
        before = cpu_seconds(pid) if pid else 0.0
        row = run_wrk(messages_url, script, connections, args.duration, MESSAGES_BODY, key)
        if pid:
            cpu = cpu_seconds(pid) - before
            row["cpu_ms_per_request"] = cpu * 1000 / max(row["requests"], 1)
            row["cpu_us_per_chunk"] = cpu * 1e6 / max(row["requests"] * (CHUNKS + 5), 1)
        results[f"messages_stream_c{connections}"] = row
        print(f"  {name:8} messages c={connections:<3} {row}", flush=True)
    # wrk's pacing keeps its connections in step: 500/s arrives as bursts of 16 every 32 ms.
    bursts = run_wrk(url, script, 16, args.duration, BODY, key, pace_ms=32)
    results["paced_500rps_c16"] = bursts
    print(f"  {name:8} wrk-paced 500/s c=16 {bursts}", flush=True)
    even = paced(url, BODY, key, rate=500, connections=16, seconds=args.duration)
    results["even_500rps_c16"] = even
    print(f"  {name:8} evenly paced 500/s c=16 {even}", flush=True)
    results.update(asyncio.run(ttfb(url, key, 500)))
    return results


def _start(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate, and wait for it (killed after 10 s)."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def bench_env(pg_url: str, redis_url: str, upstream: str, **extra: str) -> dict[str, str]:
    """A new, migrated database "bench", and the environment of Tollgate's processes on it
    (`extra`: more of it)."""
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text('DROP DATABASE IF EXISTS "bench" WITH (FORCE)'))
        connection.execute(sa.text('CREATE DATABASE "bench"'))
    admin.dispose()
    env = {
        **os.environ,
        "TOLLGATE_DATABASE_URL": pg_url.rsplit("/", 1)[0] + "/bench",
        "TOLLGATE_REDIS_URL": redis_url,
        "TOLLGATE_SECRET_KEY": "b" * 48,
        "TOLLGATE_ADMIN_TOKEN": "bench-admin",
        "TOLLGATE_OPENAI_API_KEY": "sk-bench",
        "TOLLGATE_OPENAI_BASE_URL": upstream + "/v1",
        "TOLLGATE_ANTHROPIC_API_KEY": "sk-ant-bench",
        "TOLLGATE_ANTHROPIC_BASE_URL": upstream,
        "TOLLGATE_LOG_LEVEL": "warning",
        "TOLLGATE_API_RUNS_BACKGROUND_JOBS": os.environ.get("BENCH_API_DRAINS", "false"),
        **extra,
    }
    subprocess.run([TOLLGATE, "migrate"], env=env, check=True, capture_output=True)
    return env


def setup_gateway(
    pg_url: str, redis_url: str, upstream: str, stack: ExitStack, **extra: str
) -> tuple[str, int, str]:
    """Tollgate and its worker on a new database; `extra`: more of their environment."""
    port = free_port()
    env = bench_env(pg_url, redis_url, upstream, TOLLGATE_PORT=str(port), **extra)
    process = _start([TOLLGATE, "serve", "--no-migrate"], env)
    stack.callback(stop, process)
    # As in docker-compose: the worker drains the usage ledger, the API only appends to it.
    worker = _start([TOLLGATE, "worker"], env)
    stack.callback(stop, worker)
    WORKER_PID.append(worker.pid)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz")
    tenant = httpx.post(
        url + "/admin/tenants",
        json={"name": "bench"},
        headers={"Authorization": "Bearer bench-admin"},
    ).json()
    key = httpx.post(
        url + "/v1/keys",
        json={
            "name": "bench-user",
            "max_spend_usd": 1_000_000,
            "allowed_providers": ["openai", "anthropic"],
            "rpm": 10_000_000,
            "tpm": 10_000_000_000,
        },
        headers={"Authorization": f"Bearer {tenant['master_key']}"},
    ).json()
    return url, process.pid, key["secret"]


def start_upstream_and_floor(
    stack: ExitStack,
) -> tuple[str, subprocess.Popen[bytes], str, subprocess.Popen[bytes]]:
    """The fake upstream and the floor in front of it, up: (upstream url, its process, floor url,
    its process), both stopped when `stack` closes."""
    upstream_port, floor_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    up = _start(
        [
            PYTHON,
            str(ROOT / "bench/upstream.py"),
            "--port",
            str(upstream_port),
            "--chunks",
            str(CHUNKS),
        ]
    )
    stack.callback(stop, up)
    floor = _start(
        [
            PYTHON,
            str(ROOT / "bench/floor.py"),
            "--port",
            str(floor_port),
            "--upstream",
            upstream,
        ]
    )
    stack.callback(stop, floor)
    wait_http(upstream + "/")
    wait_http(f"http://127.0.0.1:{floor_port}/")
    return upstream, up, f"http://127.0.0.1:{floor_port}", floor


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        urls = stack.enter_context(services())
        upstream, up, floor_url, floor = start_upstream_and_floor(stack)
        gateway, gateway_pid, key = setup_gateway(
            urls["TOLLGATE_TEST_POSTGRES_URL"], urls["TOLLGATE_TEST_REDIS_URL"], upstream, stack
        )
        path = "/v1/chat/completions"
        report = {
            "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
            "duration_s": args.duration,
            "direct": measure("direct", upstream + path, up.pid, script, "", args),
            "floor": measure("floor", floor_url + path, floor.pid, script, "", args),
            "gateway": measure("gateway", gateway + path, gateway_pid, script, key, args),
        }
        served = sum(
            row["requests"] for name, row in report["gateway"].items() if isinstance(row, dict)
        )
        report["worker_cpu_ms_per_request"] = cpu_seconds(WORKER_PID[0]) * 1000 / served
        ab = subprocess.run(
            [PYTHON, str(ROOT / "bench/client_ab.py"), "--upstream", upstream, "--json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        report["client_ab"] = json.loads(ab.stdout)
    print_table(report)
    print_client_ab(report["client_ab"])
    write_report(report)


def write_report(report: dict[str, Any], prefix: str = "") -> None:
    """The run's numbers in bench/results/<prefix><time>.json (kept out of git)."""
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    target = out / f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {target.relative_to(ROOT)}")


def print_table(report: dict[str, Any]) -> None:
    print(
        "\n| run | target | req/s | p50 ms | p99 ms | CPU ms/req | µs CPU/chunk | +p50 vs direct |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for run in [
        *(f"plain_c{c}" for c in (1, 16, 64)),
        *(f"stream_c{c}" for c in (1, 16, 64)),
        "spaced_stream_c16",
        "messages_stream_c1",
        "messages_stream_c16",
        "paced_500rps_c16",
        "even_500rps_c16",
    ]:
        direct = report["direct"][run]
        for target in ("direct", "floor", "gateway"):
            row = report[target][run]
            chunk = f"{row['cpu_us_per_chunk']:.1f}" if "cpu_us_per_chunk" in row else ""
            cpu = f"{row['cpu_ms_per_request']:.3f}" if "cpu_ms_per_request" in row else ""
            print(
                f"| {run} | {target} | {row['rps']:.0f} | {row['p50_ms']:.2f} "
                f"| {row['p99_ms']:.2f} | {cpu} | {chunk} "
                f"| {row['p50_ms'] - direct['p50_ms']:+.2f} |"
            )
    for target in ("direct", "floor", "gateway"):
        row = report[target]
        print(f"TTFB {target}: p50 {row['ttfb_p50_ms']:.2f} ms, p99 {row['ttfb_p99_ms']:.2f} ms")
    rss = max(row.get("rss_mb", 0) for row in report["gateway"].values() if isinstance(row, dict))
    print(
        f"gateway RSS max {rss:.0f} MB; worker (ledger drain) CPU per gateway request "
        f"{report['worker_cpu_ms_per_request']:.3f} ms"
    )
    print_targets(report, rss)


def print_targets(report: dict[str, Any], rss: float) -> None:
    """Each SPEC §8 line: the gateway's number, the floor's from the same run, the target."""
    direct, floor, gateway = report["direct"], report["floor"], report["gateway"]

    def each(target: dict[str, Any], runs: list[str], field: str, digits: int) -> str:
        return " / ".join(f"{target[run][field]:.{digits}f}" for run in runs)

    def over(target: dict[str, Any], run: str, field: str) -> float:
        return float(target[run][field] - direct[run][field])

    plain = [f"plain_c{c}" for c in (1, 16, 64)]
    chunks = ["stream_c16", "spaced_stream_c16", "messages_stream_c16"]
    ttfb_floor = floor["ttfb_p50_ms"] - direct["ttfb_p50_ms"]
    ttfb_gateway = gateway["ttfb_p50_ms"] - direct["ttfb_p50_ms"]
    lines = [
        ("CPU ms per plain request, c1 / c16 / c64", each(gateway, plain, "cpu_ms_per_request", 2),
         each(floor, plain, "cpu_ms_per_request", 2), "<= 0.5"),
        ("added p50 at 1 client, ms", f"{over(gateway, 'plain_c1', 'p50_ms'):+.2f}",
         f"{over(floor, 'plain_c1', 'p50_ms'):+.2f}", "<= 1"),
        ("added p99 at an even 500 req/s over 16 connections, ms",
         f"{over(gateway, 'even_500rps_c16', 'p99_ms'):+.2f}",
         f"{over(floor, 'even_500rps_c16', 'p99_ms'):+.2f}", "<= 5"),
        ("TTFB over direct (p50), ms", f"{ttfb_gateway:+.2f}", f"{ttfb_floor:+.2f}", "<= 1"),
        ("µs CPU per chunk: stream / events 1 ms apart / messages, c16",
         each(gateway, chunks, "cpu_us_per_chunk", 1), each(floor, chunks, "cpu_us_per_chunk", 1),
         "<= 50"),
        ("RSS under load, MB", f"{rss:.0f}", "", "<= 200"),
    ]  # fmt: skip
    print("\n| SPEC §8 | gateway | floor, same run | target |\n|---|---|---|---|")
    for name, ours, floors, target in lines:
        print(f"| {name} | {ours} | {floors} | {target} |")


if __name__ == "__main__":
    main()
