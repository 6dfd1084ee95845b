"""Budget alerts go by email too: each alert's recipients (the tenant's `alerts.emails` when it
fired) and the email's delivery state, beside the webhook's.

Alerts before this had no email to send: their recipients stay NULL.

Revision ID: e7a3c9f1b2d4
Revises: c4f1a7d9e2b5
Create Date: 2026-12-07 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "e7a3c9f1b2d4"
down_revision: str | None = "c4f1a7d9e2b5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch_op:
        batch_op.add_column(sa.Column("email_recipients", JSON_TYPE, nullable=True))
        batch_op.add_column(
            sa.Column("email_delivered_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("email_attempts", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.add_column(sa.Column("email_last_error", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch_op:
        batch_op.drop_column("email_last_error")
        batch_op.drop_column("email_attempts")
        batch_op.drop_column("email_delivered_at")
        batch_op.drop_column("email_recipients")
