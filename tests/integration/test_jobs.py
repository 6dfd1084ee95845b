"""The job queue behind tool calls: arq on Redis (a worker process's, or the API's own) and the
in-process default run a job once per id, and hand its result to whoever awaits that id."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.worker import Retry, func
from pydantic import SecretStr

from api.background import arq_functions
from api.db import create_engine, create_sessionmaker
from api.kit.crypto import SecretBox
from api.kit.jobs import ArqJobQueue, EmbeddedWorker, JobQueue, LocalJobQueue
from api.settings import Settings
from api.tool import runner
from tests.conftest import SECRET_KEY, app_client, truncate_all
from tests.factories.tenants import ADMIN_TOKEN, bearer, create_key, create_tenant
from tests.fakes.tool_models import ChainingAnthropic, ToolHooks

RUNS: list[str] = []


async def _slow_echo(_ctx: dict[str, Any], value: str) -> str:
    RUNS.append(value)
    await asyncio.sleep(0.2)
    return value.upper()


@contextlib.asynccontextmanager
async def _arq_worker(
    redis_url: str, functions: list[Any], ctx: dict[str, Any]
) -> AsyncIterator[None]:
    worker = EmbeddedWorker(redis_url, functions, ctx)  # what `tollgate worker` runs, in-process
    worker.start()
    try:
        yield
    finally:
        await worker.close()


@pytest.mark.parametrize("kind", ["arq", "local"])
async def test_one_run_per_job_id(redis_url: str, kind: str):
    RUNS.clear()
    queue: JobQueue
    async with contextlib.AsyncExitStack() as stack:
        if kind == "arq":
            queue = ArqJobQueue.connect(redis_url)
            await stack.enter_async_context(
                _arq_worker(redis_url, [func(_slow_echo, name="test.echo")], {})
            )
        else:
            queue = LocalJobQueue({"test.echo": _slow_echo}, {})
        stack.push_async_callback(queue.close)
        job_id = f"echo-{kind}-{id(queue)}"
        results = await asyncio.gather(
            *(queue.run("test.echo", "hi", job_id=job_id, timeout_seconds=5) for _ in range(3))
        )
        assert results == ["HI"] * 3
        assert RUNS == ["hi"]
        with pytest.raises(TimeoutError):
            await queue.run("test.echo", "late", job_id=job_id + "-2", timeout_seconds=0.05)


TRIES: list[int] = []


async def _flaky(ctx: dict[str, Any], value: str) -> str:
    """Asks to be run again (arq's `Retry`) until its third try."""
    TRIES.append(ctx["job_try"])
    if ctx["job_try"] < 3:
        raise Retry(defer=0.05)
    return value


@pytest.mark.parametrize("kind", ["arq", "local"])
async def test_enqueued_jobs_are_retried_on_both_queues(redis_url: str, kind: str):
    TRIES.clear()
    queue: JobQueue
    async with contextlib.AsyncExitStack() as stack:
        if kind == "arq":
            queue = ArqJobQueue.connect(redis_url)
            flaky = func(_flaky, name="test.flaky", max_tries=3)
            await stack.enter_async_context(_arq_worker(redis_url, [flaky], {}))
        else:
            queue = LocalJobQueue({"test.flaky": _flaky}, {}, {"test.flaky": 3})
        stack.push_async_callback(queue.close)
        job_id = f"flaky-{kind}-{id(queue)}"
        await queue.enqueue("test.flaky", "x", job_id=job_id)
        await queue.enqueue("test.flaky", "x", job_id=job_id)  # the same id: not run twice
        for _ in range(200):
            if len(TRIES) >= 3:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert TRIES == [1, 2, 3]


async def test_tool_calls_run_on_a_separate_worker(
    postgres_url: str, redis_url: str, tmp_path: Path
):
    """As in production: the API runs no jobs itself; a worker (here in the test) runs the
    webhook calls the API enqueued, and the API reads their results from Redis."""
    settings = Settings(
        data_dir=tmp_path / "data", database_url=postgres_url, redis_url=redis_url,
        secret_key=SECRET_KEY, admin_token=ADMIN_TOKEN, api_runs_background_jobs=False,
        allow_private_webhooks=True,
    )  # fmt: skip
    with ChainingAnthropic() as anthropic, ToolHooks() as hooks:
        assert isinstance(anthropic, ChainingAnthropic)
        assert isinstance(hooks, ToolHooks)
        configured = settings.model_copy(
            update={"anthropic_api_key": SecretStr(anthropic.api_key),
                    "anthropic_base_url": anthropic.base_url}
        )  # fmt: skip
        engine = create_engine(postgres_url)
        async with httpx.AsyncClient() as webhooks:
            tool_runner = runner.ToolRunner(
                create_sessionmaker(engine), webhooks, SecretBox(SECRET_KEY)
            )
            ctx = {"tool_runner": tool_runner}
            async with (
                app_client(configured) as http,
                _arq_worker(redis_url, arq_functions(settings), ctx),
            ):
                tenant = await create_tenant(http)
                schema = {
                    "type": "object",
                    "properties": {"q": {"type": "string"}},
                    "required": ["q"],
                }
                tool = await http.post("/v1/tools", headers=tenant.headers, json={
                    "name": "search", "input_schema": schema, "webhook_url": hooks.url("search"),
                })  # fmt: skip
                hooks.secrets["search"] = tool.json()["signing_secret"]
                headers = bearer((await create_key(http, tenant))["secret"])
                thread = (await http.post("/v1/threads", json={}, headers=headers)).json()
                response = await http.post(
                    f"/v1/threads/{thread['id']}/messages", headers=headers,
                    json={"model": "claude-sonnet-4", "content": "find", "tools": ["search"]},
                )  # fmt: skip
                assert response.status_code == 200, response.text
                assert response.json()["content"][0]["text"] == 'Done: search={"q": "example"}'
                assert [(name, valid) for name, _, valid, _ in hooks.calls] == [("search", True)]
        await engine.dispose()
    truncate_all(postgres_url)
