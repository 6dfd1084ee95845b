"""Request traces: each proxied request's steps and upstream attempts, written with its usage
event (same transaction, keyed by the event's id) and kept for the trace retention.

Requests before this have no trace: nothing to backfill.

Revision ID: c4f1a7d9e2b5
Revises: b8e2d4f6a1c3
Create Date: 2026-12-07 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c4f1a7d9e2b5"
down_revision: str | None = "b8e2d4f6a1c3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "request_traces",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("trace_id", sa.String(length=128), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("steps", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_request_traces_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_request_traces_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_traces")),
    )  # fmt: skip
    op.create_index(
        "ix_request_traces_tenant_id_trace_id", "request_traces", ["tenant_id", "trace_id"]
    )
    op.create_index("ix_request_traces_created_at", "request_traces", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_request_traces_created_at", table_name="request_traces")
    op.drop_index("ix_request_traces_tenant_id_trace_id", table_name="request_traces")
    op.drop_table("request_traces")
