"""Usage events say whether their token counts were estimated by Tollgate.

Revision ID: e005707e4109
Revises: 04cecee6b048
Create Date: 2026-11-22 00:29:25.611042
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e005707e4109"
down_revision: str | None = "04cecee6b048"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as batch_op:
        batch_op.add_column(
            sa.Column("estimated", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_events") as batch_op:
        batch_op.drop_column("estimated")
