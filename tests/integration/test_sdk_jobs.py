"""Jobs that stay queued: Tollgate on PostgreSQL + Redis with no worker running (the API does
not run background jobs either), so `cancel` and `wait`'s timeout meet a queued job every
time. Sync and async clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import tollgate

from api.app import create_app
from api.settings import Settings
from tests.conftest import SECRET_KEY, truncate_all
from tests.factories.tenants import ADMIN_TOKEN
from tests.fakes.server import serve_in_thread
from tests.integration.test_sdk import MODEL, Driver, driver_for

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Summarise"}]}


@pytest.fixture
def base_url(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[str]:
    settings = Settings(
        data_dir=tmp_path / "data", database_url=postgres_url, redis_url=redis_url,
        secret_key=SECRET_KEY, admin_token=ADMIN_TOKEN, search_enabled=False,
        api_runs_background_jobs=False,
    )  # fmt: skip
    try:
        with serve_in_thread(create_app(settings)) as url:
            yield url
    finally:
        truncate_all(postgres_url)


@pytest.fixture(params=["sync", "async"])
async def sdk(request: pytest.FixtureRequest, base_url: str) -> AsyncIterator[Driver]:
    async with driver_for(request.param, base_url) as driver:
        yield driver


class TestQueuedJobs:
    async def test_a_queued_job_is_cancelled(self, sdk: Driver):
        key = await sdk(sdk.client.keys.create, name="alice", test=True)
        alice = sdk.as_key(key.secret)
        job = await alice(alice.client.jobs.submit, endpoint="/v1/chat/completions", body=BODY)
        assert job.status == "queued"
        cancelled = await alice(alice.client.jobs.cancel, job.id)
        assert (cancelled.id, cancelled.status, cancelled.done) == (job.id, "cancelled", True)
        assert (await alice(alice.client.jobs.wait, job.id, timeout=5)).status == "cancelled"
        listed = await sdk.all(sdk.client.jobs.list, status="cancelled")
        assert [j.id for j in listed] == [job.id]

    async def test_wait_gives_up_at_its_timeout_with_the_job_as_last_seen(self, sdk: Driver):
        key = await sdk(sdk.client.keys.create, name="alice", test=True)
        alice = sdk.as_key(key.secret)
        job = await alice(alice.client.jobs.submit, endpoint="/v1/chat/completions", body=BODY)
        with pytest.raises(tollgate.JobTimeoutError) as waited:
            await alice(alice.client.jobs.wait, job.id, timeout=0.3, poll_interval=0.1)
        assert (waited.value.job.id, waited.value.job.status) == (job.id, "queued")
