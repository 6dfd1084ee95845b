"""Search's numbers: `python bench/search.py` (or `make bench-search`), a few minutes.

1. stores: the embedded default's candidates at 10k and 100k points of 384 dimensions (50
   tenants x 10 keys, payload indexes on tenant and key): qdrant-client's local mode (in memory;
   its on-disk mode's write rate on 1,000 points) against Qdrant Edge. Upserts per second, and
   a top-10 query's p50/p99 filtered by tenant, by tenant and key, and with one tenant holding
   every point (the embedded default's usual case); Edge's `optimize()` (per-tenant graphs) at
   10k (at 100k too with `--full`: minutes).
2. indexing: thread messages per second through `Indexer` (claim, embed, upsert, mark) with the
   real model, 1,000 turns (a 25-word user message and a 120-word answer each), on SQLite and
   on PostgreSQL; and short turns (8 and 16 words) on SQLite.
3. processes (PostgreSQL + Redis, as docker-compose): `tollgate serve`'s RSS after 200 turns and
   100 searches (end-to-end latency) with search on, then off; `tollgate worker`'s RSS with the
   model loaded; a search's vector side (embed the query, ask the store) run by that worker on
   a round trip against in this process; the embedded default's API (SQLite, no Redis: it
   loads the model itself) after the same load.

The Qdrant server of part 3 is a stand-in (`tests/fakes/qdrant.py`: Qdrant's REST routes over
qdrant-client's local mode): no Qdrant server runs on the development machines, so its query
latency is not the server's. Vectors in part 1 are random (seeded); parts 2 and 3 embed text.
Prints a table per part and writes bench/results/search-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.testenv import free_port, services  # noqa: E402 - after the path is set

PYTHON = sys.executable
TOLLGATE = str(Path(sys.executable).with_name("tollgate"))
DIMENSIONS = 384
TENANTS, KEYS = 50, 10
_VOCABULARY = """invoice refund latency model token budget cache thread search vector tenant key
cap stripe webhook retry stream answer prompt region billing usage report monthly customer
dashboard export error timeout upstream provider account limit spend alert weather recipe travel
flight hotel museum garden river mountain coffee bread guitar lesson"""
WORDS = _VOCABULARY.split()


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50_ms": round(pick(0.5) * 1000, 2), "p99_ms": round(pick(0.99) * 1000, 2),
            "samples": len(ordered)}  # fmt: skip


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


# --- 1. stores ---------------------------------------------------------------------------------


def _points(count: int, seed: int, one_tenant: bool = False) -> tuple[list[Any], list[str]]:
    from api.search.store import VectorPoint

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, DIMENSIONS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tenants = [str(uuid.UUID(int=t + 1)) for t in range(TENANTS)]
    keys = [[str(uuid.UUID(int=(t + 1) * 1000 + k)) for k in range(KEYS)] for t in range(TENANTS)]
    points = []
    for i in range(count):
        t = 0 if one_tenant else i % TENANTS
        key = keys[t][(i // TENANTS) % KEYS]
        payload = {"tenant_id": tenants[t], "key_id": key, "thread_id": str(uuid.uuid4()),
                   "message_id": "", "role": "user", "created_at": 1.7e9 + i}  # fmt: skip
        point_id = uuid.uuid4()
        payload["message_id"] = str(point_id)
        points.append(VectorPoint(point_id, vectors[i].tolist(), payload))
    return points, tenants


async def _queries(store: Any, filters: list[Any], rounds: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(rounds):
        vector = rng.standard_normal(DIMENSIONS)
        vector /= np.linalg.norm(vector)
        started = time.perf_counter()
        await store.query(vector.tolist(), filters[i % len(filters)], 10, None)
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


async def bench_store(kind: str, count: int, full: bool, workdir: Path) -> dict[str, Any]:
    from api.search.edge import EdgeStore
    from api.search.store import QdrantStore, VectorFilter

    points, tenants = _points(count, seed=count)
    store: Any = EdgeStore(workdir / f"edge-{count}") if kind == "edge" else QdrantStore(":memory:")
    await store.ensure(DIMENSIONS)
    started = time.perf_counter()
    for start in range(0, count, 1000):
        await store.upsert(points[start : start + 1000])
    upsert_s = time.perf_counter() - started
    assert await store.count() == count
    # Local mode is brute force in Python: seconds per query at 100k, so fewer rounds there.
    rounds = 200 if kind == "edge" else max(5, 200_000 // count // 10)
    by_tenant = [VectorFilter(uuid.UUID(t)) for t in tenants]
    by_key = [VectorFilter(uuid.UUID(p.payload["tenant_id"]), key_id=uuid.UUID(p.payload["key_id"]))
              for p in points[:TENANTS * KEYS]]  # fmt: skip
    row: dict[str, Any] = {
        "upserts_per_s": round(count / upsert_s),
        "tenant": await _queries(store, by_tenant, rounds, 1),
        "tenant_key": await _queries(store, by_key, rounds, 2),
    }
    await store.close()
    alone, only = _points(count, seed=count + 1, one_tenant=True)
    store = EdgeStore(workdir / f"edge1-{count}") if kind == "edge" else QdrantStore(":memory:")
    await store.ensure(DIMENSIONS)
    for start in range(0, count, 1000):
        await store.upsert(alone[start : start + 1000])
    row["one_tenant"] = await _queries(store, [VectorFilter(uuid.UUID(only[0]))], rounds, 3)
    if kind == "edge" and (count <= 10_000 or full):
        started = time.perf_counter()
        await asyncio.to_thread(store._shard.optimize)
        row["optimize_s"] = round(time.perf_counter() - started, 1)
        row["one_tenant_optimized"] = await _queries(
            store, [VectorFilter(uuid.UUID(only[0]))], rounds, 3
        )
    await store.close()
    return row


def local_disk_writes(workdir: Path) -> float:
    """qdrant-client's local mode on disk (`path=`): upserts per second over 1,000 points."""
    from qdrant_client import QdrantClient, models

    points, _ = _points(1000, seed=5)
    client = QdrantClient(path=str(workdir / "local-disk"))
    client.create_collection(
        "m", vectors_config=models.VectorParams(size=DIMENSIONS, distance=models.Distance.COSINE)
    )
    started = time.perf_counter()
    for start in range(0, 1000, 100):
        client.upsert("m", [models.PointStruct(id=str(p.id), vector=p.vector, payload=p.payload)
                            for p in points[start : start + 100]])  # fmt: skip
    rate = 1000 / (time.perf_counter() - started)
    client.close()
    return round(rate)


def part_stores(counts: list[int], full: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for count in counts:
            for kind in ("edge", "local"):
                print(f"  stores: {kind} at {count:,} points…", file=sys.stderr)
                results[f"{kind}_{count}"] = asyncio.run(bench_store(kind, count, full, workdir))
        results["local_disk_upserts_per_s"] = local_disk_writes(workdir)
    return results


# --- 2. indexing -------------------------------------------------------------------------------


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


async def _seed_turns(url: str, turns: int, words: tuple[int, int]) -> None:
    """A tenant, a key and a thread through the API (search off), then `turns` turns written
    straight to the database, unindexed."""
    from asgi_lifespan import LifespanManager
    from sqlalchemy.ext.asyncio import AsyncSession

    from api.app import create_app
    from api.db import create_engine
    from api.settings import Settings
    from api.thread.models import Thread, ThreadMessage

    tmp = Path(tempfile.mkdtemp())
    settings = Settings(database_url=url, secret_key="b" * 48, admin_token="bench",
                        data_dir=tmp, search_enabled=False)  # fmt: skip
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            admin = {"Authorization": "Bearer bench"}
            tenant = (await client.post("/admin/tenants", json={"name": "b"}, headers=admin)).json()
            master = {"Authorization": f"Bearer {tenant['master_key']}"}
            key = (await client.post("/v1/keys", json={"name": "k"}, headers=master)).json()
            user = {"Authorization": f"Bearer {key['secret']}"}
            thread = (await client.post("/v1/threads", json={}, headers=user)).json()
    shutil.rmtree(tmp, ignore_errors=True)
    rng = random.Random(42)
    engine = create_engine(url)
    async with AsyncSession(engine) as session, session.begin():
        thread_id = uuid.UUID(thread["id"])
        tenant_id = uuid.UUID(tenant["id"])
        rows = []
        for turn in range(turns):
            turn_id = uuid.uuid4()
            for offset, (role, count) in enumerate(zip(("user", "assistant"), words, strict=True)):
                rows.append(ThreadMessage(
                    id=turn_id if offset == 0 else uuid.uuid4(), tenant_id=tenant_id,
                    thread_id=thread_id, seq=2 * turn + offset, turn_id=turn_id, role=role,
                    content=[{"type": "text", "text": _sentence(rng, count)}],
                ))  # fmt: skip
        session.add_all(rows)
        await session.execute(
            sa.update(Thread).where(Thread.id == thread_id).values(message_count=2 * turns)
        )
    await engine.dispose()


async def bench_indexing(
    url: str, turns: int, workdir: Path, words: tuple[int, int] = (25, 120)
) -> dict[str, Any]:
    from api.db import create_engine, create_sessionmaker
    from api.migrate import upgrade_head
    from api.search.edge import EdgeStore
    from api.search.embedder import LocalEmbedder
    from api.search.indexer import Indexer

    await asyncio.to_thread(upgrade_head, url)
    await _seed_turns(url, turns, words)
    engine = create_engine(url)
    store = EdgeStore(workdir / f"index-{uuid.uuid4().hex[:6]}")
    embedder = LocalEmbedder(None)
    await embedder.dimensions()  # the model is loaded before the clock starts
    indexer = Indexer(create_sessionmaker(engine), store, embedder)
    started = time.perf_counter()
    done = await indexer.index_pending()
    seconds = time.perf_counter() - started
    assert done == 2 * turns, done
    assert await store.count() == 2 * turns
    await store.close()
    await engine.dispose()
    return {"turns": turns, "words": list(words), "messages_per_s": round(done / seconds, 1),
            "turns_per_s": round(turns / seconds, 1), "seconds": round(seconds, 1)}  # fmt: skip


def part_indexing(turns: int, pg_admin: str) -> dict[str, Any]:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print("  indexing: SQLite…", file=sys.stderr)
        sqlite = f"sqlite+aiosqlite:///{workdir / 'index.db'}"
        results["sqlite"] = asyncio.run(bench_indexing(sqlite, turns, workdir))
        print("  indexing: PostgreSQL…", file=sys.stderr)
        results["postgres"] = asyncio.run(
            bench_indexing(_fresh_database(pg_admin, "bench_index"), turns, workdir)
        )
        print("  indexing: SQLite, short messages (8 and 16 words)…", file=sys.stderr)
        short = f"sqlite+aiosqlite:///{workdir / 'short.db'}"
        results["sqlite_short"] = asyncio.run(bench_indexing(short, turns, workdir, (8, 16)))
    return results


def _fresh_database(admin_url: str, name: str) -> str:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


# --- 3. processes ------------------------------------------------------------------------------


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def _wait(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what}: not within {seconds} s")


def _serve(env: dict[str, str], stack: ExitStack) -> tuple[str, int]:
    port = free_port()
    process = _start([TOLLGATE, "serve", "--no-migrate", "--port", str(port)], env)
    stack.callback(process.wait)
    stack.callback(process.terminate)
    url = f"http://127.0.0.1:{port}"
    _wait(lambda: httpx.get(url + "/healthz").status_code == 200, 60, "tollgate serve")
    return url, process.pid


def _load(url: str, turns: int, searches: int) -> dict[str, Any]:
    """Turns through the mock provider, then (when search is on) searches once every turn is
    indexed: the end-to-end search latency."""
    with httpx.Client(base_url=url, timeout=60) as client:
        admin = {"Authorization": "Bearer bench"}
        tenant = client.post("/admin/tenants", json={"name": "b"}, headers=admin).json()
        master = {"Authorization": f"Bearer {tenant['master_key']}"}
        key = client.post("/v1/keys", json={"name": "k", "test": True}, headers=master).json()
        user = {"Authorization": f"Bearer {key['secret']}"}
        thread = client.post("/v1/threads", json={}, headers=user).json()["id"]
        rng = random.Random(7)
        for _ in range(turns):
            body = {"model": "gpt-4o-mini", "content": _sentence(rng, 25), "max_tokens": 100}
            sent = client.post(f"/v1/threads/{thread}/messages", json=body, headers=user)
            assert sent.status_code == 200, sent.text
        probe = client.post("/v1/search", json={"query": "x"}, headers=user)
        if probe.status_code == 404:
            return {"search": "off", "tenant_id": tenant["id"]}
        _wait(lambda: client.get(f"/v1/threads/{thread}", headers=user).json()["indexed"],
              300, "indexing")  # fmt: skip
        samples = []
        for _ in range(searches):
            query = _sentence(rng, 6)
            started = time.perf_counter()
            found = client.post("/v1/search", json={"query": query}, headers=user)
            samples.append(time.perf_counter() - started)
            assert found.status_code == 200, found.text
        return {"search_http": percentiles(samples), "tenant_id": tenant["id"]}


async def _round_trips(
    redis_url: str, qdrant_url: str, tenant_id: str, count: int
) -> dict[str, Any]:
    """A search's vector side (embed the query, ask the store) run by the worker, one round
    trip through Redis (arq), against the same run in this process."""
    from api.kit.jobs import ArqJobQueue
    from api.search.embedder import LocalEmbedder
    from api.search.nearest import LocalNearest, Nearest, WorkerNearest
    from api.search.store import QdrantStore, VectorFilter

    where = VectorFilter(uuid.UUID(tenant_id))
    rng = random.Random(11)
    queue = ArqJobQueue.connect(redis_url)
    store = QdrantStore(qdrant_url)
    results: dict[str, Any] = {}
    runs: list[tuple[str, Nearest]] = [
        ("worker_round_trip", WorkerNearest(queue)),
        ("in_process", LocalNearest(LocalEmbedder(None), store)),
    ]
    for name, nearest in runs:
        await nearest.nearest("warm up", where, 10, None)
        samples = []
        for _ in range(count):
            text = _sentence(rng, 8)
            started = time.perf_counter()
            found = await nearest.nearest(text, where, 10, None)
            samples.append(time.perf_counter() - started)
            assert len(found) == 10
        results[name] = percentiles(samples)
    await queue.close()
    await store.close()
    results["bench_process_rss_mb_with_model"] = rss_mb(os.getpid())
    return results


def part_processes(urls: dict[str, str], turns: int, searches: int) -> dict[str, Any]:
    from tests.fakes.qdrant import FakeQdrant

    results: dict[str, Any] = {}
    redis_url = urls["TOLLGATE_TEST_REDIS_URL"]
    database = _fresh_database(urls["TOLLGATE_TEST_POSTGRES_URL"], "bench_search")
    qdrant = FakeQdrant().start()
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    env = {
        **base, "TOLLGATE_DATABASE_URL": database, "TOLLGATE_REDIS_URL": redis_url,
        "TOLLGATE_SECRET_KEY": "b" * 48, "TOLLGATE_ADMIN_TOKEN": "bench",
        "TOLLGATE_QDRANT_URL": qdrant.url, "TOLLGATE_LOG_LEVEL": "warning",
        "TOLLGATE_API_RUNS_BACKGROUND_JOBS": "false",  # as docker-compose: the worker does it
    }  # fmt: skip
    subprocess.run([TOLLGATE, "migrate"], env=env, check=True, capture_output=True)
    try:
        with ExitStack() as stack:
            print("  processes: tollgate worker (loads the model)…", file=sys.stderr)
            worker = _start([TOLLGATE, "worker"], env)
            stack.callback(worker.wait)
            stack.callback(worker.terminate)
            results["worker_rss_mb_started"] = _settled_rss(worker.pid, 5)
            tenant_id = ""
            for search in ("on", "off"):
                print(f"  processes: tollgate serve, search {search}…", file=sys.stderr)
                with ExitStack() as api:
                    url, pid = _serve({**env, "TOLLGATE_SEARCH_ENABLED": str(search == "on")}, api)
                    idle = rss_mb(pid)
                    load = _load(url, turns, searches)
                    tenant_id = tenant_id or load["tenant_id"]
                    del load["tenant_id"]
                    results[f"api_search_{search}"] = {
                        "rss_mb_idle": idle, "rss_mb_after": rss_mb(pid),
                        "rss_mb_peak": rss_mb(pid, "VmHWM"), **load,
                    }  # fmt: skip
            results["worker_rss_mb_after"] = rss_mb(worker.pid)
            _wait(lambda: _pending(database) == 0, 300, "the worker indexing the backlog")
            print("  processes: a search's vector side, worker against in process…",
                  file=sys.stderr)  # fmt: skip
            results.update(asyncio.run(_round_trips(redis_url, qdrant.url, tenant_id, 50)))
            results["worker_rss_mb_peak"] = rss_mb(worker.pid, "VmHWM")
        print("  processes: the embedded default (the API loads the model)…", file=sys.stderr)
        with ExitStack() as api, tempfile.TemporaryDirectory() as data:
            embedded = {**base, "TOLLGATE_DATA_DIR": data, "TOLLGATE_ADMIN_TOKEN": "bench",
                        "TOLLGATE_LOG_LEVEL": "warning"}  # fmt: skip
            subprocess.run([TOLLGATE, "migrate"], env=embedded, check=True, capture_output=True)
            url, pid = _serve(embedded, api)
            idle = rss_mb(pid)
            load = _load(url, turns, searches)
            load.pop("tenant_id")
            results["api_embedded_default"] = {
                "rss_mb_idle": idle, "rss_mb_after": rss_mb(pid),
                "rss_mb_peak": rss_mb(pid, "VmHWM"), **load,
            }  # fmt: skip
    finally:
        qdrant.stop()
    return results


def _pending(url: str) -> int:
    """Messages the worker has yet to index (the search-off run's turns, by its sweep)."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        query = "SELECT count(*) FROM thread_messages WHERE indexed_at IS NULL"
        count = int(connection.execute(sa.text(query)).scalar_one())
    engine.dispose()
    return count


def _settled_rss(pid: int, seconds: float) -> float:
    time.sleep(seconds)
    return rss_mb(pid)


# --- report ------------------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    stores = report.get("stores")
    if stores:
        print("\n| store | points | upserts/s | tenant p50/p99 ms | tenant+key p50/p99 ms |"
              " one tenant p50/p99 ms | optimize s | one tenant, optimized |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for name, row in stores.items():
            if not isinstance(row, dict):
                continue
            kind, count = name.split("_")

            def cell(k: str, r: dict[str, Any] = row) -> str:
                return f"{r[k]['p50_ms']} / {r[k]['p99_ms']}" if k in r else "-"

            print(f"| {kind} | {int(count):,} | {row['upserts_per_s']:,} | {cell('tenant')} | "
                  f"{cell('tenant_key')} | {cell('one_tenant')} | {row.get('optimize_s', '-')} "
                  f"| {cell('one_tenant_optimized')} |")  # fmt: skip
        print(f"\nlocal mode on disk: {stores['local_disk_upserts_per_s']:,} upserts/s")
    for name, row in (report.get("indexing") or {}).items():
        print(
            f"indexing ({name}, {row['words']} words): {row['turns_per_s']} turns/s, "
            f"{row['messages_per_s']} messages/s ({row['turns']} turns, {row['seconds']} s)"
        )
    processes = report.get("processes")
    if processes:
        print(json.dumps(processes, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="stores,indexing,processes")
    parser.add_argument("--points", default="10000,100000", help="store sizes, comma-separated")
    parser.add_argument("--turns", type=int, default=1000, help="turns indexed in part 2")
    parser.add_argument("--full", action="store_true", help="also optimize Edge at 100k")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    report: dict[str, Any] = {"machine": {"cores": os.cpu_count()}}
    steps: list[tuple[str, Callable[[dict[str, str]], Any]]] = [
        ("stores", lambda _: part_stores([int(n) for n in args.points.split(",")], args.full)),
        ("indexing", lambda u: part_indexing(args.turns, u["TOLLGATE_TEST_POSTGRES_URL"])),
        ("processes", lambda u: part_processes(u, 200, 100)),
    ]
    with services() as urls:
        for name, step in steps:
            if name in parts:
                print(f"{name}…", file=sys.stderr)
                started = time.perf_counter()
                report[name] = step(urls)
                report[f"{name}_seconds"] = round(time.perf_counter() - started, 1)
    print_report(report)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    target = out / f"search-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
