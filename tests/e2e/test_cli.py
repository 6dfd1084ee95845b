"""The `tollgate` command as a user runs it: a real process, a real server, real HTTP."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import TOLLGATE
from tests.e2e.processes import tollgate_env as _env
from tools.testenv import free_port


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TOLLGATE, *args], env=env, capture_output=True, text=True, timeout=60)


class TestCommands:
    def test_version_and_help(self, tmp_path: Path):
        from api import __version__

        assert _run(["version"], _env(tmp_path)).stdout.strip() == __version__
        for args in (["--help"], ["serve", "--help"], ["tenant", "create", "--help"]):
            result = _run(args, _env(tmp_path))
            assert result.returncode == 0
            assert "Usage:" in result.stdout

    def test_tenant_create_prints_json(self, tmp_path: Path):
        result = _run(["tenant", "create", "--name", "Acme"], _env(tmp_path))
        assert result.returncode == 0, result.stderr
        created = json.loads(result.stdout)
        assert set(created) == {"tenant_id", "master_key"}
        assert created["master_key"].startswith("qlk_live_")

    def test_errors_are_one_line_and_non_zero(self, tmp_path: Path):
        no_secret = _run(
            ["tenant", "create", "--name", "x"],
            _env(tmp_path, TOLLGATE_DATABASE_URL="postgresql+psycopg://u@127.0.0.1:1/x"),
        )
        assert no_secret.returncode == 1
        assert no_secret.stderr.strip().splitlines() == [
            "error: TOLLGATE_SECRET_KEY is required when TOLLGATE_DATABASE_URL is set"
        ]
        unreachable = _run(
            ["migrate"],
            _env(
                tmp_path, TOLLGATE_DATABASE_URL=f"postgresql+psycopg://u@127.0.0.1:{free_port()}/x"
            ),
        )
        assert unreachable.returncode == 1
        last = unreachable.stderr.strip().splitlines()[-1]
        assert last.startswith("error: database:")
        assert "Traceback" not in unreachable.stderr
        missing_name = _run(["tenant", "create"], _env(tmp_path))
        assert missing_name.returncode == 2
        assert "--name" in missing_name.stderr


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`tollgate serve` with nothing configured but a data dir and a port: the embedded default."""
    port = free_port()
    env = _env(tmp_path, TOLLGATE_PORT=str(port))
    process = subprocess.Popen(
        [*TOLLGATE, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            process.kill()
            pytest.fail(f"server did not start: {process.stdout.read() if process.stdout else ''}")
        yield base, tmp_path
    finally:
        process.terminate()
        process.wait(15)
        if process.stdout:
            process.stdout.close()


class TestServe:
    def test_embedded_default_end_to_end(self, server: tuple[str, Path]):
        base, data_dir = server
        assert (data_dir / "tollgate.db").exists()
        assert oct((data_dir / "secret_key").stat().st_mode & 0o777) == "0o600"
        created = _run(["tenant", "create", "--name", "Acme"], _env(data_dir))
        master = json.loads(created.stdout)["master_key"]
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {master}"}) as http:
            key = http.post("/v1/keys", json={"name": "alice", "max_spend_usd": 20})
            assert key.status_code == 201
            listed = http.get("/v1/keys").json()
            assert {item["name"] for item in listed["data"]} == {"alice", "master"}
            own = http.get(
                "/v1/keys/self", headers={"Authorization": f"Bearer {key.json()['secret']}"}
            )
            assert own.json()["max_spend_usd"] == 20.0
            assert http.get("/readyz").json()["checks"]["database"] == "ok"
