"""Usage events and their rollups carry the per-unit quantities: seconds of audio transcribed,
characters spoken, images made (SPEC §5.12).

Events recorded before this used none of them, so every existing row, event or rollup, takes 0
and the rollups still sum exactly the log: nothing to backfill.

Revision ID: 91c537439879
Revises: d58b3f1e7a92
Create Date: 2026-12-07 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "91c537439879"
down_revision: str | None = "d58b3f1e7a92"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("usage_events", "usage_rollups", "usage_key_rollups", "usage_tenant_rollups")
_UNITS = ("audio_seconds", "characters", "images")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch_op:
            for name in _UNITS:
                batch_op.add_column(
                    sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")
                )


def downgrade() -> None:
    for table in reversed(_TABLES):
        with op.batch_alter_table(table) as batch_op:
            for name in reversed(_UNITS):
                batch_op.drop_column(name)
