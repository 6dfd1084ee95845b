"""Many processes on one PostgreSQL and one Redis, as a deployment runs them: API processes
(`tollgate serve`, each uvicorn with its own event loop) and `tollgate worker`s, behind Debian's
nginx sending requests round-robin."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.processes import start, stop, tollgate_env, wait_healthy
from tools.testenv import free_port, nginx_balancer


@dataclass
class Topology:
    url: str  # the load balancer
    apis: list[str]  # each API process, for a test that must reach one directly
    logs: list[Path] = field(default_factory=list)

    def log_text(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-4000:]}" for log in self.logs)


@contextlib.contextmanager
def topology(
    workdir: Path, env: dict[str, str], *, apis: int = 3, workers: int = 2
) -> Iterator[Topology]:
    """Start the processes on a migrated database; stop them all when done."""
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    ports = [free_port() for _ in range(apis)]
    base = {**env, "TOLLGATE_API_RUNS_BACKGROUND_JOBS": "false"}  # the workers run them
    try:
        for index, port in enumerate(ports):
            log = workdir / f"api-{index}.log"
            process = start(
                ["serve", "--no-migrate"],
                tollgate_env(workdir / "data", TOLLGATE_PORT=str(port), **base),
                log,
            )
            processes.append(process)
            logs.append(log)
        for index in range(workers):
            log = workdir / f"worker-{index}.log"
            processes.append(start(["worker"], tollgate_env(workdir / "data", **base), log))
            logs.append(log)
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, process, log in zip(urls, processes, logs, strict=False):
            wait_healthy(url, process, log)
        with nginx_balancer(ports, workdir / "nginx") as url:
            yield Topology(url, urls, logs)
    finally:
        for process in processes:
            stop(process)
