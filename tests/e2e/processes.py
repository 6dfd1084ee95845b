"""Tollgate's commands as real processes: start them, wait until they serve, kill them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

_SCRIPT = Path(sys.executable).with_name("tollgate")
# The installed console script, as a user runs it; `python -m api` when not installed.
TOLLGATE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "api"]


def tollgate_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The test runner's environment without its TOLLGATE_ settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    return {**env, "TOLLGATE_DATA_DIR": str(data_dir), **extra}


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([*TOLLGATE, *args], env=env, stdout=out, stderr=out)


def wait_healthy(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"tollgate did not start:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
