"""Usage events and their rollups carry what the response cache saved: hits, the tokens a hit
did not send upstream, and their cost (SPEC §5.10's cache); an event names its cache kind.

Events recorded before this were never cache hits, so every existing row takes 0 (the kind
none) and the rollups still sum exactly the log: nothing to backfill.

Revision ID: b8e2d4f6a1c3
Revises: 91c537439879
Create Date: 2026-12-07 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b8e2d4f6a1c3"
down_revision: str | None = "91c537439879"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("usage_events", "usage_rollups", "usage_key_rollups", "usage_tenant_rollups")
_SUMS = ("cache_hits", "saved_tokens", "saved_micros")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch_op:
            for name in _SUMS:
                batch_op.add_column(
                    sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")
                )
            if table == "usage_events":
                batch_op.add_column(sa.Column("cache", sa.String(length=16), nullable=True))


def downgrade() -> None:
    for table in reversed(_TABLES):
        with op.batch_alter_table(table) as batch_op:
            if table == "usage_events":
                batch_op.drop_column("cache")
            for name in reversed(_SUMS):
                batch_op.drop_column(name)
