"""Stored responses and their items (`store: true` on /v1/responses).

Revision ID: c41e9a7d2b56
Revises: b7d2f4a61c38
Create Date: 2026-12-07 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c41e9a7d2b56"
down_revision: str | None = "b7d2f4a61c38"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "stored_responses",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("response_id", sa.String(length=128), nullable=False),
        sa.Column("previous_response_id", sa.String(length=128), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("body", JSON_TYPE, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_stored_responses_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_stored_responses_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stored_responses")),
        sa.UniqueConstraint("tenant_id", "response_id", name="uq_stored_responses_tenant_response"),
    )
    with op.batch_alter_table("stored_responses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stored_responses_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_stored_responses_key_id"), ["key_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_stored_responses_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_stored_responses_expires_at"), ["expires_at"], unique=False
        )
    op.create_table(
        "response_items",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("response_pk", sa.Uuid(), nullable=False),
        sa.Column("item_id", sa.String(length=128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("output", sa.Boolean(), nullable=False),
        sa.Column("item", JSON_TYPE, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_response_items_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_response_items_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["response_pk"],
            ["stored_responses.id"],
            name=op.f("fk_response_items_response_pk_stored_responses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_response_items")),
    )
    with op.batch_alter_table("response_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_response_items_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index("ix_response_items_tenant_item", ["tenant_id", "item_id"])
        batch_op.create_index("ix_response_items_response_position", ["response_pk", "position"])


def downgrade() -> None:
    op.drop_table("response_items")
    op.drop_table("stored_responses")
