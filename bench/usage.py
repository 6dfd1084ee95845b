"""Usage queries over a large request log (SPEC §8: 10 million rows, answers in ≤ 100 ms).

`python bench/usage.py [--rows 10000000] [--keys 1000]` starts a throwaway PostgreSQL, creates
one tenant with `--keys` keys through the API, writes `--rows` usage events straight into the
log with `generate_series` (spread over the last 30 days, three models, 2 % failures), builds
the rollups the way an upgrade does (the migration's backfill), then times the API:
`GET /v1/usage` grouped by key, model and day over the 30 days, one key's usage, and
`GET /v1/keys/{id}` (its spend this month against its limits). For scale it also times the same
per-key report summed from the raw log. Prints a table and writes bench/results/usage-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from alembic import command

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.migrate import alembic_config  # noqa: E402 - after the path is set
from bench.run import wait_http  # noqa: E402
from tools.testenv import free_port, services  # noqa: E402

TOLLGATE = str(Path(sys.executable).with_name("tollgate"))
BEFORE_ROLLUPS = "b7c3e9a1d5f2"
BATCH = 1_000_000

EVENTS_SQL = """
WITH keys AS (SELECT array_agg(id ORDER BY id) AS ids FROM api_keys
              WHERE tenant_id = :tenant AND scope = 'standard')
INSERT INTO usage_events (id, request_id, tenant_id, key_id, endpoint, model, provider, status,
    input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, cost_micros, latency_ms,
    tool_calls, estimated, created_at)
SELECT gen_random_uuid(), 'req_bench', :tenant, keys.ids[1 + (g * 7919) % :nkeys],
    '/v1/chat/completions', (ARRAY['gpt-4o-mini', 'gpt-4o', 'claude-sonnet-4'])[1 + g % 3],
    'openai', CASE WHEN g % 50 = 0 THEN 502 ELSE 200 END,
    CASE WHEN g % 50 = 0 THEN 0 ELSE 100 + g % 400 END, 0,
    CASE WHEN g % 50 = 0 THEN 0 ELSE 20 + g % 200 END, 0,
    CASE WHEN g % 50 = 0 THEN 0 ELSE 30 + g % 300 END, 400, 0, false,
    :start + (g * :step) * interval '1 microsecond'
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g, keys
"""


def _timed(client: httpx.Client, path: str, headers: dict[str, str], runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(path, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    samples.sort()
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=30, help="timed requests per query")
    args = parser.parse_args()
    report: dict[str, Any] = {"rows": args.rows, "keys": args.keys}
    with ExitStack() as stack:
        pg = stack.enter_context(services())["TOLLGATE_TEST_POSTGRES_URL"]
        admin = sa.create_engine(pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text('DROP DATABASE IF EXISTS "usagebench" WITH (FORCE)'))
            connection.execute(sa.text('CREATE DATABASE "usagebench"'))
        admin.dispose()
        url = pg.rsplit("/", 1)[0] + "/usagebench"
        port = free_port()
        env = {
            **os.environ,
            "TOLLGATE_DATABASE_URL": url,
            "TOLLGATE_SECRET_KEY": "u" * 48,
            "TOLLGATE_ADMIN_TOKEN": "bench-admin",
            "TOLLGATE_PORT": str(port),
            "TOLLGATE_LOG_LEVEL": "warning",
        }
        server = subprocess.Popen(
            [TOLLGATE, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        stack.callback(server.terminate)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", 60)
        client = stack.enter_context(httpx.Client(base_url=base, timeout=60))
        tenant = client.post(
            "/admin/tenants",
            json={"name": "bench"},
            headers={"Authorization": "Bearer bench-admin"},
        ).json()
        master = {"Authorization": f"Bearer {tenant['master_key']}"}
        keys = [
            client.post(
                "/v1/keys", json={"name": f"user-{i}", "max_spend_usd": 1000}, headers=master
            ).json()["id"]
            for i in range(args.keys)
        ]
        print(f"tenant with {len(keys)} keys", flush=True)

        # The log as it stands before an upgrade; the upgrade then builds the rollups.
        command.downgrade(alembic_config(url), BEFORE_ROLLUPS)
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        now = datetime.now(UTC)
        start = now - timedelta(days=30)
        step = int(timedelta(days=30) / timedelta(microseconds=1) / args.rows)
        started = time.monotonic()
        for first in range(0, args.rows, BATCH):
            last = min(first + BATCH, args.rows) - 1
            with engine.begin() as connection:
                connection.execute(
                    sa.text(EVENTS_SQL),
                    {"tenant": tenant["id"], "nkeys": len(keys), "start": start, "step": step,
                     "first": first, "last": last},
                )  # fmt: skip
            print(f"  {last + 1:,} events", flush=True)
        report["insert_seconds"] = time.monotonic() - started
        started = time.monotonic()
        command.upgrade(alembic_config(url), "head")
        report["rollup_backfill_seconds"] = time.monotonic() - started
        with engine.begin() as connection:
            connection.execute(sa.text("ANALYZE usage_events"))
            for table in ("usage_rollups", "usage_key_rollups", "usage_tenant_rollups"):
                connection.execute(sa.text(f"ANALYZE {table}"))
            report["rollup_rows"] = connection.scalar(sa.text("SELECT count(*) FROM usage_rollups"))
        print(f"rollups built in {report['rollup_backfill_seconds']:.1f} s", flush=True)

        window = f"start={start.isoformat()}&end={now.isoformat()}".replace("+", "%2B")
        queries = {
            "usage_by_key_30d": f"/v1/usage?{window}&group_by=key",
            "usage_by_model_30d": f"/v1/usage?{window}&group_by=model",
            "usage_by_day_30d": f"/v1/usage?{window}&group_by=day",
            "usage_one_key_30d": f"/v1/usage?{window}&key_id={keys[0]}",
            "usage_this_month": "/v1/usage?group_by=key",
            "key_with_spend": f"/v1/keys/{keys[0]}",
        }
        report["api"] = {}
        for name, path in queries.items():
            _timed(client, path, master, 2)  # warm the cache of the plan and the pages
            report["api"][name] = _timed(client, path, master, args.runs)
            print(f"  {name:22} {report['api'][name]}", flush=True)
        raw = sa.text(
            "SELECT key_id, count(*), sum(input_tokens), sum(output_tokens), sum(cost_micros) "
            "FROM usage_events WHERE tenant_id = :tenant AND created_at >= :start "
            "AND created_at < :end GROUP BY key_id"
        )
        samples = []
        with engine.connect() as connection:
            for _ in range(3):
                began = time.perf_counter()
                connection.execute(raw, {"tenant": tenant["id"], "start": start, "end": now}).all()
                samples.append((time.perf_counter() - began) * 1000)
        report["raw_log_by_key_30d_ms"] = min(samples)
        engine.dispose()
    print(
        f"\n{args.rows:,} events, {args.keys} keys; rollup rows: {report['rollup_rows']:,}; "
        f"insert {report['insert_seconds']:.0f} s, rollup backfill "
        f"{report['rollup_backfill_seconds']:.0f} s"
    )
    print("| query | p50 ms | p99 ms |\n|---|---|---|")
    for name, row in report["api"].items():
        print(f"| {name} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} |")
    print(f"the per-key report summed from the raw log: {report['raw_log_by_key_30d_ms']:.0f} ms")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    target = out / f"usage-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(report, indent=2))
    print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
