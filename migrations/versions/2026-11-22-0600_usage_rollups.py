"""Hourly, daily and monthly rollups of the request log, filled from the events recorded.

Revision ID: 6d2a7c4e9b13
Revises: b7c3e9a1d5f2
Create Date: 2026-11-22 06:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "6d2a7c4e9b13"
down_revision: str | None = "b7c3e9a1d5f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SUMS = (
    "count(*), "
    "sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END), "
    "sum(CASE WHEN status < 400 OR input_tokens + output_tokens > 0 THEN 1 ELSE 0 END), "
    "sum(input_tokens), sum(cached_input_tokens), sum(output_tokens), sum(cost_micros)"
)
# The start of each event's UTC hour and day, as the application writes buckets.
_BUCKETS = {
    "postgresql": {
        "h": "date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
        "d": "date_trunc('day', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
        "m": "date_trunc('month', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
    },
    "sqlite": {  # naive UTC, in SQLAlchemy's text format
        "h": "strftime('%Y-%m-%d %H:00:00.000000', created_at)",
        "d": "strftime('%Y-%m-%d 00:00:00.000000', created_at)",
        "m": "strftime('%Y-%m-01 00:00:00.000000', created_at)",
    },
}


def upgrade() -> None:
    op.create_table(
        "usage_rollups",
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("span", sa.String(length=1), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.Column("reached", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_usage_rollups_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_usage_rollups_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_id", "span", "bucket", "model", name=op.f("pk_usage_rollups")),
    )
    op.create_index(
        "ix_usage_rollups_tenant_id_span_bucket",
        "usage_rollups",
        ["tenant_id", "span", "bucket"],
    )
    buckets = _BUCKETS[op.get_bind().dialect.name]
    for span, bucket in buckets.items():
        op.execute(
            "INSERT INTO usage_rollups (key_id, span, bucket, model, tenant_id, requests, "
            "failed, reached, input_tokens, cached_input_tokens, output_tokens, cost_micros) "
            f"SELECT key_id, '{span}', {bucket}, model, tenant_id, {_SUMS} "
            f"FROM usage_events GROUP BY key_id, {bucket}, model, tenant_id"
        )


def downgrade() -> None:
    op.drop_index("ix_usage_rollups_tenant_id_span_bucket", table_name="usage_rollups")
    op.drop_table("usage_rollups")
