"""A backend goes down while requests flow, and comes back (issue: backend faults).

Redis here is a server of the test's own (not the suite's shared one), with its append-only
file on as in docker-compose.yml, stopped and started again on the same port while a running
Tollgate serves. Each test then checks that requests got a clear 503 while it was down (never a
500, never a hang), that Tollgate recovered by itself, and that the ledger reconciles exactly
with what the fake upstream answered.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from api.app import create_app
from api.migrate import upgrade_head
from api.settings import Settings
from tests.conftest import SECRET_KEY
from tests.factories.chat import HELLO
from tests.factories.tenants import ADMIN_TOKEN, bearer
from tests.fakes.server import serve_in_thread
from tests.fakes.upstream import FakeUpstream
from tools import testenv
from tools.testenv import free_port

CAP_USD = 0.1  # ten of the fake's longest gpt-4o answers, then clamped ones


class RedisServer:
    """redis-server on one port, stopped and started again at will, its data kept on disk."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with httpx.Client() as probe:  # any answer on the port: it listens
                    probe.get(f"http://127.0.0.1:{self.port}", timeout=0.2)
            except httpx.RemoteProtocolError:
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
            else:
                return

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.stop()


def _until(ask: Callable[[], httpx.Response], status: int, seconds: float) -> httpx.Response:
    """Ask until the answer has `status` (or `seconds` pass); the last answer."""
    deadline = time.monotonic() + seconds
    answer = ask()
    while answer.status_code != status and time.monotonic() < deadline:
        time.sleep(0.2)
        answer = ask()
    return answer


def _billed(http: httpx.Client, master: dict[str, str]) -> list[dict[str, Any]]:
    """Every request of the tenant's log that reached the model (all pages)."""
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = http.get("/v1/logs", params=params, headers=master).json()
        entries += [entry for entry in page["data"] if entry["status"] == 200]
        cursor = page["next_cursor"]
        if cursor is None:
            return entries


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
class TestRedisOutage:
    def test_requests_get_503_while_redis_is_down_and_the_ledger_reconciles_after(
        self, database_url: str, settings: Settings, redis: RedisServer, upstream: FakeUpstream
    ):
        config = settings.model_copy(
            update={
                "redis_url": redis.url,
                "openai_api_key": SecretStr("sk-operator-openai"),
                "openai_base_url": upstream.openai_base_url,
                "retry_max_total_seconds": 0.5,
            }
        )
        # Each answer as long as the request allows (a clamped one near the cap too): billed
        # the most it can be.
        upstream.mode, upstream.words = "generate", 1000
        with serve_in_thread(create_app(config)) as url, httpx.Client(
            base_url=url, timeout=30
        ) as http:  # fmt: skip
            tenant = http.post("/admin/tenants", json={"name": "t"}, headers=bearer(ADMIN_TOKEN))
            master = bearer(tenant.json()["master_key"])
            body = {"name": "u", "max_spend_usd": CAP_USD}
            key = http.post("/v1/keys", json=body, headers=master).json()
            user = bearer(key["secret"])

            def ask() -> httpx.Response:
                body = {"model": "gpt-4o", "messages": HELLO}
                return http.post("/v1/chat/completions", json=body, headers=user)

            assert [ask().status_code for _ in range(3)] == [200, 200, 200]
            redis.stop()
            started = time.monotonic()
            during = [ask() for _ in range(12)]
            assert time.monotonic() - started < 60  # answered, not hung
            # Room this process leased before the outage is still its own to serve; past it,
            # a request cannot be held against the cap and is refused as retryable.
            for answer in during:
                assert answer.status_code in (200, 503), answer.text
                if answer.status_code == 503:
                    assert answer.json()["error"]["code"] == "limits_unavailable"
                    assert answer.headers["x-should-retry"] == "true"
            redis.start()
            # Recovered by itself: the room leased before the outage is given back once Redis
            # answers (at the next sweep), not held until the leases' holds expire.
            recovered = _until(ask, 200, seconds=20)
            assert recovered.status_code == 200, recovered.text
            # Then on to the cap, through requests clamped to what is left: it holds.
            assert _until(ask, 402, seconds=60).status_code == 402
            served = len(upstream.seen)
            # Every answer the upstream gave is billed once: the log and the key's spend agree.
            deadline = time.monotonic() + 20
            billed = _billed(http, master)
            while len(billed) < served and time.monotonic() < deadline:
                time.sleep(0.2)
                billed = _billed(http, master)
            assert len(billed) == served, [answer.status_code for answer in during]
            spent = http.get(f"/v1/keys/{key['id']}", headers=master).json()["spend_micros"]
            assert spent == sum(entry["cost_micros"] for entry in billed)
            assert spent <= CAP_USD * 1_000_000


class PostgresServer:
    """A PostgreSQL server of the test's own, stopped (immediately, as a crash) and started
    again on the same port with its data."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data = workdir / "pg"
        self.port = free_port()
        self.bin = testenv._pg_bin()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        command = testenv._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), *args])
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def create(self) -> None:
        self.data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")
            shutil.chown(self.data, "postgres")
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--no-sync"]  # fmt: skip
        subprocess.run(testenv._as_postgres(initdb), check=True, stdout=subprocess.DEVNULL)
        self.start()
        upgrade_head(self.url)

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data} -c fsync=off"
        self._ctl("-o", options, "-l", str(self.data / "log"), "-w", "start")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "stop")


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    # Not under pytest's tmp_path: its parent is root's alone, and the server runs as postgres.
    workdir = Path(tempfile.mkdtemp(prefix="tollgate-pg-"))
    server = PostgresServer(workdir)
    try:
        server.create()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


class TestPostgresOutage:
    def test_management_answers_503_model_calls_go_on_and_the_ledger_catches_up(
        self, redis: RedisServer, postgres: PostgresServer, upstream: FakeUpstream, tmp_path: Path
    ):
        config = Settings(
            data_dir=tmp_path / "data", database_url=postgres.url, redis_url=redis.url,
            secret_key=SECRET_KEY, admin_token=ADMIN_TOKEN, search_enabled=False,
            openai_api_key=SecretStr("sk-operator-openai"),
            openai_base_url=upstream.openai_base_url,
        )  # fmt: skip
        with serve_in_thread(create_app(config)) as url, httpx.Client(
            base_url=url, timeout=30
        ) as http:  # fmt: skip
            tenant = http.post("/admin/tenants", json={"name": "t"}, headers=bearer(ADMIN_TOKEN))
            master = bearer(tenant.json()["master_key"])
            key = http.post("/v1/keys", json={"name": "u", "max_spend_usd": 5}, headers=master)
            user = bearer(key.json()["secret"])

            def ask() -> httpx.Response:
                body = {"model": "gpt-4o", "messages": HELLO}
                return http.post("/v1/chat/completions", json=body, headers=user)

            assert ask().status_code == 200  # the key is in the key cache now
            postgres.stop()
            # A key the cache knows, with its spend counted in Redis: served, its usage event
            # waiting in Redis's ledger stream for the database.
            assert [ask().status_code for _ in range(3)] == [200, 200, 200]
            management = http.get("/v1/keys", headers=master)
            assert management.status_code == 503
            assert management.json()["error"]["code"] == "database_unavailable"
            assert management.headers["x-should-retry"] == "true"
            # On the same keep-alive connection: an expected failure does not close it.
            assert http.get("/readyz").status_code == 503
            postgres.start()
            assert _until(lambda: http.get("/v1/keys", headers=master), 200, 20).status_code == 200
            served = len(upstream.seen)
            deadline = time.monotonic() + 30
            billed = _billed(http, master)
            while len(billed) < served and time.monotonic() < deadline:
                time.sleep(0.2)
                billed = _billed(http, master)
            assert len(billed) == served == 4
            spent = http.get(f"/v1/keys/{key.json()['id']}", headers=master).json()
            assert spent["spend_micros"] == sum(entry["cost_micros"] for entry in billed)
