"""Many API processes: `python bench/processes.py` (or `make bench-processes`), ~2 minutes.

Throwaway PostgreSQL and Redis, the fake upstream, one `tollgate worker`, and 1, 2 and 3
`tollgate serve` processes behind Debian's nginx (round-robin, as `deploy/nginx.conf`), on one
database, one Redis and one key (spend cap, rpm/tpm, metering on). For each count, wrk drives
non-streaming Chat Completions through nginx at 16 and 64 connections, and streaming at 16.
The floor (a bare pass-through proxy) behind the same nginx is measured in the same run, and
one API process without nginx, to show what the balancer itself costs. Each target gets 3 s
of load first, not counted (a new process's first requests load and cache what they need).

Reported per run: requests/s, p50/p99, CPU ms per request of the API processes together, of
nginx, and of the worker. The machine has 2 cores, shared with wrk, nginx, the upstream,
PostgreSQL and Redis: read the scaling beside the CPU columns. Writes
bench/results/processes-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402 - after the path is set
    BODY,
    STREAM_BODY,
    TOLLGATE,
    WRK_SCRIPT,
    _start,
    bench_env,
    cpu_seconds,
    run_wrk,
    start_upstream_and_floor,
    stop,
    wait_http,
    write_report,
)
from tools.testenv import ensure_nginx, free_port, nginx_balancer, services  # noqa: E402

PATH = "/v1/chat/completions"
RUNS = (("plain", 16, BODY), ("plain", 64, BODY), ("stream", 16, STREAM_BODY))


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


class Gateway:
    """API processes on one database and Redis, started on demand, and one worker."""

    def __init__(self, pg_url: str, redis_url: str, upstream: str, stack: ExitStack) -> None:
        self.env = bench_env(pg_url, redis_url, upstream)
        self.stack = stack
        self.worker = _start([TOLLGATE, "worker"], self.env)
        stack.callback(stop, self.worker)
        self.apis: list[tuple[int, int]] = []  # (port, pid)

    def scale(self, count: int) -> None:
        while len(self.apis) < count:
            port = free_port()
            process = _start(
                [TOLLGATE, "serve", "--no-migrate"], {**self.env, "TOLLGATE_PORT": str(port)}
            )
            self.stack.callback(stop, process)
            wait_http(f"http://127.0.0.1:{port}/healthz")
            self.apis.append((port, process.pid))

    def key(self) -> str:
        url = f"http://127.0.0.1:{self.apis[0][0]}"
        tenant = httpx.post(
            url + "/admin/tenants", json={"name": "bench"},
            headers={"Authorization": "Bearer bench-admin"},
        ).json()  # fmt: skip
        key = httpx.post(
            url + "/v1/keys",
            json={"name": "bench-user", "max_spend_usd": 1_000_000, "rpm": 10_000_000,
                  "tpm": 10_000_000_000},
            headers={"Authorization": f"Bearer {tenant['master_key']}"},
        ).json()  # fmt: skip
        return str(key["secret"])


def drive(
    name: str, url: str, pids: dict[str, list[int]], script: Path, key: str, seconds: int
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    run_wrk(url + PATH, script, 16, 3, BODY, key)  # warm-up: a new process's first requests
    for kind, connections, body in RUNS:
        before = {part: _cpu(group) for part, group in pids.items()}
        row: dict[str, Any] = run_wrk(url + PATH, script, connections, seconds, body, key)
        for part, group in pids.items():
            row[f"{part}_cpu_ms_per_request"] = (
                (_cpu(group) - before[part]) * 1000 / max(row["requests"], 1)
            )
        rows[f"{kind}_c{connections}"] = row
        cpu = " ".join(f"{p}={row[f'{p}_cpu_ms_per_request']:.3f}" for p in pids)
        print(
            f"  {name:16} {kind} c={connections:<3} {row['rps']:7.0f}/s "
            f"p50 {row['p50_ms']:.2f} p99 {row['p99_ms']:.2f} ms errors {row['errors']} "
            f"cpu ms/req {cpu}",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=6, help="seconds per wrk run")
    args = parser.parse_args()
    ensure_nginx()
    report: dict[str, Any] = {"machine": {"cores": os.cpu_count()}, "duration_s": args.duration}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT)
        urls = stack.enter_context(services())
        upstream, _, floor_url, floor = start_upstream_and_floor(stack)
        gateway = Gateway(
            urls["TOLLGATE_TEST_POSTGRES_URL"], urls["TOLLGATE_TEST_REDIS_URL"], upstream, stack
        )
        gateway.scale(1)
        key = gateway.key()
        worker = [gateway.worker.pid]
        floor_port = int(floor_url.rsplit(":", 1)[1])
        with nginx_balancer([floor_port], work / "nginx-floor") as lb:
            nginx = _nginx_pids(work / "nginx-floor")
            report["floor_behind_nginx"] = drive(
                "floor+nginx", lb, {"floor": [floor.pid], "nginx": nginx}, script, "",
                args.duration,
            )  # fmt: skip
        port, pid = gateway.apis[0]
        report["one_api_direct"] = drive(
            "1 api, direct", f"http://127.0.0.1:{port}", {"api": [pid], "worker": worker},
            script, key, args.duration,
        )  # fmt: skip
        for count in (1, 2, 3):
            gateway.scale(count)
            ports = [port for port, _ in gateway.apis]
            with nginx_balancer(ports, work / f"nginx-{count}") as lb:
                pids = {
                    "api": [pid for _, pid in gateway.apis],
                    "nginx": _nginx_pids(work / f"nginx-{count}"),
                    "worker": worker,
                }
                report[f"apis_{count}"] = drive(
                    f"{count} api + nginx", lb, pids, script, key, args.duration
                )
    print_table(report)
    write_report(report, "processes-")


def _nginx_pids(workdir: Path) -> list[int]:
    master = int((workdir / "nginx.pid").read_text())
    return [master, *_children(master)]


def print_table(report: dict[str, Any]) -> None:
    targets = ["floor_behind_nginx", "one_api_direct", "apis_1", "apis_2", "apis_3"]
    print("\n| target | run | req/s | p50 ms | p99 ms | CPU ms/req: api (or floor) | nginx |")
    print("|---|---|---|---|---|---|---|")
    for target in targets:
        for run, row in report[target].items():
            main_cpu = row.get("api_cpu_ms_per_request", row.get("floor_cpu_ms_per_request"))
            nginx = row.get("nginx_cpu_ms_per_request")
            print(
                f"| {target} | {run} | {row['rps']:.0f} | {row['p50_ms']:.2f} | "
                f"{row['p99_ms']:.2f} | {main_cpu:.3f} | "
                f"{'' if nginx is None else f'{nginx:.3f}'} |"
            )


if __name__ == "__main__":
    main()
