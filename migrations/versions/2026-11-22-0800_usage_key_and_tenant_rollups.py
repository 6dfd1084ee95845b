"""Rollups of the request log per key (no model) and per tenant (no key), filled from the
keys' rollups.

Revision ID: 8f1d3b5a7c20
Revises: 6d2a7c4e9b13
Create Date: 2026-11-22 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8f1d3b5a7c20"
down_revision: str | None = "6d2a7c4e9b13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SUMS = (
    "requests", "failed", "reached", "input_tokens", "cached_input_tokens", "output_tokens",
    "cost_micros",
)  # fmt: skip


def _sums() -> list[sa.Column[int]]:
    return [sa.Column(name, sa.BigInteger(), nullable=False) for name in _SUMS]


def upgrade() -> None:
    op.create_table(
        "usage_key_rollups",
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("span", sa.String(length=1), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        *_sums(),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_usage_key_rollups_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_usage_key_rollups_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_id", "span", "bucket", name=op.f("pk_usage_key_rollups")),
    )
    op.create_index(
        "ix_usage_key_rollups_tenant_id_span_bucket",
        "usage_key_rollups",
        ["tenant_id", "span", "bucket"],
    )
    op.create_table(
        "usage_tenant_rollups",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("span", sa.String(length=1), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        *_sums(),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_usage_tenant_rollups_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "span", "bucket", "model", name=op.f("pk_usage_tenant_rollups")
        ),
    )
    columns = ", ".join(_SUMS)
    sums = ", ".join(f"sum({name})" for name in _SUMS)
    op.execute(
        f"INSERT INTO usage_key_rollups (key_id, span, bucket, tenant_id, {columns}) "
        f"SELECT key_id, span, bucket, tenant_id, {sums} FROM usage_rollups "
        "GROUP BY key_id, span, bucket, tenant_id"
    )
    op.execute(
        f"INSERT INTO usage_tenant_rollups (tenant_id, span, bucket, model, {columns}) "
        f"SELECT tenant_id, span, bucket, model, {sums} FROM usage_rollups "
        "GROUP BY tenant_id, span, bucket, model"
    )
    if op.get_bind().dialect.name == "postgresql":  # plans for reads right after the upgrade
        op.execute("ANALYZE usage_key_rollups")
        op.execute("ANALYZE usage_tenant_rollups")


def downgrade() -> None:
    op.drop_table("usage_tenant_rollups")
    op.drop_index("ix_usage_key_rollups_tenant_id_span_bucket", table_name="usage_key_rollups")
    op.drop_table("usage_key_rollups")
