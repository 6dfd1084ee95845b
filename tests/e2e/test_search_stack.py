"""Search as docker-compose runs it: `tollgate serve` (not running background jobs) and
`tollgate worker` as processes, PostgreSQL, Redis and a Qdrant server (a loopback stand-in,
tests/fakes/qdrant.py). The worker holds the model, indexes turns and runs each search's vector
side; the API process never loads torch nor qdrant-client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.search.store import COLLECTION
from tests.conftest import ADMIN_TOKEN, SECRET_KEY, truncate_all
from tests.e2e.processes import start, stop, tollgate_env, wait_healthy
from tests.fakes.qdrant import FakeQdrant
from tools.testenv import free_port

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    yield postgres_url
    truncate_all(postgres_url)


@pytest.fixture
def qdrant() -> Iterator[FakeQdrant]:
    server = FakeQdrant().start()
    yield server
    server.stop()


def _libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _until(check, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_the_worker_indexes_and_answers_and_the_api_stays_small(
    tmp_path: Path, postgres_db: str, redis_url: str, qdrant: FakeQdrant
):
    port = free_port()
    env = tollgate_env(
        tmp_path / "data", TOLLGATE_PORT=str(port), TOLLGATE_DATABASE_URL=postgres_db,
        TOLLGATE_REDIS_URL=redis_url, TOLLGATE_QDRANT_URL=qdrant.url,
        TOLLGATE_SECRET_KEY=SECRET_KEY, TOLLGATE_ADMIN_TOKEN=ADMIN_TOKEN,
        TOLLGATE_API_RUNS_BACKGROUND_JOBS="false", TOLLGATE_LOG_LEVEL="warning",
    )  # fmt: skip
    log = tmp_path / "tollgate.log"
    base = f"http://127.0.0.1:{port}"
    api = start(["serve"], env, log)
    worker = start(["worker"], env, tmp_path / "worker.log")
    try:
        wait_healthy(base, api, log)
        with httpx.Client(base_url=base, timeout=60) as http:
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            tenant = http.post("/admin/tenants", json={"name": "acme"}, headers=admin).json()
            master = {"Authorization": f"Bearer {tenant['master_key']}"}
            key = http.post("/v1/keys", json={"name": "u", "test": True}, headers=master).json()
            user = {"Authorization": f"Bearer {key['secret']}"}
            thread = http.post("/v1/threads", json={}, headers=user).json()["id"]
            for text in ("How do I undo the last git commit but keep the changes?",
                         "Kubernetes pod stuck in CrashLoopBackOff",
                         "How should I store user passwords securely?"):  # fmt: skip
                body = {"model": "gpt-4o-mini", "content": text}
                sent = http.post(f"/v1/threads/{thread}/messages", json=body, headers=user)
                assert sent.status_code == 200, sent.text
            _until(lambda: http.get(f"/v1/threads/{thread}", headers=user).json()["indexed"],
                   180, "the worker did not index the turns")  # fmt: skip
            assert len(qdrant.point_ids(COLLECTION)) == 6
            found = http.post(
                "/v1/search", json={"query": "hashing passwords", "role": "user", "limit": 1},
                headers=user,
            )  # fmt: skip
            assert found.status_code == 200, found.text
            assert "passwords" in found.json()["data"][0]["text"]
            ready = http.get("/readyz").json()
            assert ready["checks"]["qdrant"] == "ok"
            assert http.delete(f"/v1/threads/{thread}", headers=user).status_code == 200
            _until(lambda: qdrant.point_ids(COLLECTION) == [], 60, "vectors left behind")
        # The model and the Qdrant client live in the worker only.
        assert "libtorch" in _libraries(worker.pid)
        assert "libtorch" not in _libraries(api.pid)
        assert "cygrpc" not in _libraries(api.pid)  # qdrant-client brings grpc along
    finally:
        stop(api)
        stop(worker)
