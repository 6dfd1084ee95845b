"""Resilience and BYOK: tenants' own provider keys (sealed); usage events record the upstream
attempts, the account that answered and the model a cross-provider failover came from.

Revision ID: 8e4b1f6c2a90
Revises: 266e39f56a9d
Create Date: 2026-11-22 04:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8e4b1f6c2a90"
down_revision: str | None = "266e39f56a9d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_credentials",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("api_key", sa.Text(), nullable=False),
        sa.Column("key_last4", sa.String(length=8), nullable=False),
        sa.Column("base_url", sa.String(length=500), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("validated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_provider_credentials_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_credentials")),
        sa.UniqueConstraint(
            "tenant_id", "provider", name=op.f("uq_provider_credentials_tenant_id")
        ),
    )
    op.create_index(
        op.f("ix_provider_credentials_created_at"), "provider_credentials", ["created_at"]
    )
    with op.batch_alter_table("usage_events") as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("account", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("failover_from", sa.String(length=240), nullable=True))
        batch_op.add_column(sa.Column("trace", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_events") as batch_op:
        batch_op.drop_column("trace")
        batch_op.drop_column("failover_from")
        batch_op.drop_column("account")
        batch_op.drop_column("attempts")
    op.drop_index(op.f("ix_provider_credentials_created_at"), table_name="provider_credentials")
    op.drop_table("provider_credentials")
