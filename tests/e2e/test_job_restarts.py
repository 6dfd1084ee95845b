"""Async jobs survive their runner dying (SPEC §5.7): SIGKILL `tollgate worker` while 20 jobs
run, start it again, and every job ends `succeeded` exactly once; a job whose answer was stored
before the kill is never sent upstream again, and one whose answer died with the worker is sent
once more. The embedded default (one process, SQLite) does the same across an API restart."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import ADMIN_TOKEN, SECRET_KEY, truncate_all
from tests.e2e.processes import start, stop, tollgate_env, wait_healthy
from tests.fakes.upstream import FakeUpstream
from tools.testenv import free_port

JOBS = 20
FAST = 10  # answered at once; the rest stall until the worker is killed


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    """An upstream of these tests' own: answers cut off by a kill end on it after the test, and
    must not show up in another test's record of what the shared one answered."""
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    yield postgres_url
    truncate_all(postgres_url)


def _sync(url: str) -> str:
    return url.replace("sqlite+aiosqlite", "sqlite")


def _body(index: int) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"job {index}"}]}


def _sent_per_job(upstream: FakeUpstream) -> collections.Counter[str]:
    return collections.Counter(seen.body["messages"][0]["content"] for seen in upstream.seen)


async def _tenant_key(http: httpx.AsyncClient) -> str:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    tenant = (await http.post("/admin/tenants", json={"name": "Acme"}, headers=admin)).json()
    master = {"Authorization": f"Bearer {tenant['master_key']}"}
    key = (await http.post("/v1/keys", json={"name": "user"}, headers=master)).json()
    return str(key["secret"])


async def _submit_all(http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, str]:
    ids = {}
    for index in range(JOBS):
        job = {"endpoint": "/v1/chat/completions", "body": _body(index)}
        response = await http.post("/v1/jobs", json=job, headers=headers)
        assert response.status_code == 202, response.text
        ids[f"job {index}"] = response.json()["id"]
    return ids


async def _statuses(
    http: httpx.AsyncClient, headers: dict[str, str], ids: dict[str, str]
) -> dict[str, dict[str, Any]]:
    return {
        marker: (await http.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        for marker, job_id in ids.items()
    }


async def _until(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _usage_events(database_url: str) -> collections.Counter[str]:
    """Successful usage events per job (request ids are `job_<id>_<attempt>`)."""
    engine = sa.create_engine(_sync(database_url))
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT request_id FROM usage_events WHERE status = 200")
        ).scalars()
        counted = collections.Counter(r.split("_")[1] for r in rows if r.startswith("job_"))
    engine.dispose()
    return counted


def _check_outcome(
    upstream: FakeUpstream,
    finished: dict[str, dict[str, Any]],
    stored_before_kill: set[str],
    database_url: str,
) -> None:
    assert all(job["status"] == "succeeded" for job in finished.values()), finished
    sent = _sent_per_job(upstream)
    for marker in stored_before_kill:
        assert sent[marker] == 1, (marker, sent)  # never sent again
        assert finished[marker]["attempts"] == 1
    for marker in set(finished) - stored_before_kill:
        assert sent[marker] == 2, (marker, sent)  # its first answer died with the runner
        assert finished[marker]["attempts"] == 2
    events = _usage_events(database_url)
    # One usage event per stored answer: the calls cut off by the kill never settled.
    assert {job["id"].replace("-", "") for job in finished.values()} == set(events)
    assert set(events.values()) == {1}


def _env(upstream: FakeUpstream, **extra: str) -> dict[str, str]:
    return {
        "TOLLGATE_SECRET_KEY": SECRET_KEY,
        "TOLLGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "TOLLGATE_OPENAI_API_KEY": "sk-operator",
        "TOLLGATE_OPENAI_BASE_URL": upstream.openai_base_url,
        "TOLLGATE_LOG_LEVEL": "warning",
        "TOLLGATE_JOB_HEARTBEAT_SECONDS": "1",  # a dead worker's jobs run again after 3 s
        **extra,
    }


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


async def _run_until_kill(
    http: httpx.AsyncClient, headers: dict[str, str], upstream: FakeUpstream
) -> tuple[dict[str, str], set[str]]:
    """Submit the jobs; once the fast ones are stored and the others are with the upstream,
    return (the caller kills the runner then)."""
    ids = await _submit_all(http, headers)

    async def fast_stored_and_rest_sent() -> bool:
        done = await _statuses(http, headers, ids)
        succeeded = sum(job["status"] == "succeeded" for job in done.values())
        return succeeded == FAST and len(upstream.seen) == JOBS

    await _until(fast_stored_and_rest_sent, 30, "the fast jobs to be stored")
    done = await _statuses(http, headers, ids)
    return ids, {marker for marker, job in done.items() if job["status"] == "succeeded"}


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_killed_worker_leaves_every_job_to_succeed_once(
    tmp_path: Path, postgres_db: str, redis_url: str, upstream: FakeUpstream
):
    upstream.failures = ["ok"] * FAST + ["stall"] * (JOBS - FAST)
    upstream.stall_seconds = 8  # past the kill (and short enough to end before teardown)
    port = free_port()
    env = tollgate_env(
        tmp_path / "data", **_env(upstream, TOLLGATE_PORT=str(port),
        TOLLGATE_DATABASE_URL=postgres_db, TOLLGATE_REDIS_URL=redis_url,
        TOLLGATE_API_RUNS_BACKGROUND_JOBS="false"),
    )  # fmt: skip
    log = tmp_path / "tollgate.log"
    api = start(["serve"], env, log)
    worker = start(["worker"], env, log)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", api, log)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            headers = {"Authorization": f"Bearer {await _tenant_key(http)}"}
            ids, stored = await _run_until_kill(http, headers, upstream)
            _kill(worker)
            upstream.stall_seconds = 0  # the upstream answers again
            worker = start(["worker"], env, log)

            async def all_finished() -> bool:
                done = await _statuses(http, headers, ids)
                return all(job["status"] == "succeeded" for job in done.values())

            await _until(all_finished, 90, "every job to succeed after the restart")
            finished = await _statuses(http, headers, ids)
        await asyncio.sleep(1.0)  # the worker's ledger drain moves the last events
        _check_outcome(upstream, finished, stored, postgres_db)
    finally:
        stop(worker)
        stop(api)


async def test_the_embedded_default_runs_interrupted_jobs_after_a_restart(
    tmp_path: Path, upstream: FakeUpstream
):
    upstream.failures = ["ok"] * FAST + ["stall"] * (JOBS - FAST)
    upstream.stall_seconds = 8
    port = free_port()
    env = tollgate_env(tmp_path / "data", **_env(upstream, TOLLGATE_PORT=str(port)))
    database_url = f"sqlite:///{tmp_path / 'data' / 'tollgate.db'}"
    log = tmp_path / "tollgate.log"
    api = start(["serve"], env, log)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", api, log)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            headers = {"Authorization": f"Bearer {await _tenant_key(http)}"}
            ids, stored = await _run_until_kill(http, headers, upstream)
            _kill(api)
            upstream.stall_seconds = 0
            api = start(["serve"], env, log)
            wait_healthy(f"http://127.0.0.1:{port}", api, log)

            async def all_finished() -> bool:
                done = await _statuses(http, headers, ids)
                return all(job["status"] == "succeeded" for job in done.values())

            await _until(all_finished, 60, "every job to succeed after the restart")
            finished = await _statuses(http, headers, ids)
        _check_outcome(upstream, finished, stored, database_url)
    finally:
        stop(api)
