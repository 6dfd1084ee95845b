"""Thread messages remember when search indexed them: `indexed_at`, NULL until their vector is
written, with a partial index over what is still to do (oldest first). Existing messages start
unindexed, so the sweep indexes them after the upgrade.

Revision ID: a3c9e1f04b21
Revises: 8f1d3b5a7c20
Create Date: 2026-12-07 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a3c9e1f04b21"
down_revision: str | None = "8f1d3b5a7c20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("thread_messages") as batch_op:
        batch_op.add_column(sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_thread_messages_unindexed",
        "thread_messages",
        ["created_at"],
        postgresql_where=sa.text("indexed_at IS NULL"),
        sqlite_where=sa.text("indexed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_thread_messages_unindexed", table_name="thread_messages")
    with op.batch_alter_table("thread_messages") as batch_op:
        batch_op.drop_column("indexed_at")
