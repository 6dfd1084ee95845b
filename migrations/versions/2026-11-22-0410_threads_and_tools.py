"""Threads and their messages (numbered per thread, deduplicated by idempotency key), and
webhook tools with their sealed signing secrets.

Revision ID: 266e39f56a9d
Revises: 3f6b2d8c1a90
Create Date: 2026-11-22 03:27:16.756320
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "266e39f56a9d"
down_revision: str | None = "3f6b2d8c1a90"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "tools",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("input_schema", JSON_TYPE, nullable=False),
        sa.Column("webhook_url", sa.String(length=2048), nullable=False),
        sa.Column("timeout_ms", sa.Integer(), nullable=False),
        sa.Column("signing_secret", sa.Text(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tools_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tools")),
        sa.UniqueConstraint("tenant_id", "name", name="uq_tools_tenant_id_name"),
    )
    with op.batch_alter_table("tools", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tools_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_tools_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "threads",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("metadata", JSON_TYPE, nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_threads_key_id_api_keys"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_threads_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_threads")),
    )
    with op.batch_alter_table("threads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_threads_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_threads_key_id"), ["key_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_threads_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "thread_messages",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("thread_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("turn_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content", JSON_TYPE, nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("provider", sa.String(length=32), nullable=True),
        sa.Column("stop_reason", sa.String(length=32), nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_thread_messages_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["threads.id"],
            name=op.f("fk_thread_messages_thread_id_threads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_thread_messages")),
        sa.UniqueConstraint(
            "thread_id", "idempotency_key", name="uq_thread_messages_thread_id_idempotency_key"
        ),
        sa.UniqueConstraint("thread_id", "seq", name="uq_thread_messages_thread_id_seq"),
    )
    with op.batch_alter_table("thread_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_thread_messages_tenant_id"), ["tenant_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("thread_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_thread_messages_tenant_id"))

    op.drop_table("thread_messages")
    with op.batch_alter_table("threads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_threads_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_threads_key_id"))
        batch_op.drop_index(batch_op.f("ix_threads_created_at"))

    op.drop_table("threads")
    with op.batch_alter_table("tools", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tools_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_tools_created_at"))

    op.drop_table("tools")
