"""Thread messages remember a hash of the request their idempotency key was first used with,
so the same key with another body is refused instead of replayed.

Revision ID: b7c3e9a1d5f2
Revises: 8e4b1f6c2a90
Create Date: 2026-11-22 04:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b7c3e9a1d5f2"
down_revision: str | None = "8e4b1f6c2a90"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("thread_messages") as batch_op:
        batch_op.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("thread_messages") as batch_op:
        batch_op.drop_column("request_hash")
