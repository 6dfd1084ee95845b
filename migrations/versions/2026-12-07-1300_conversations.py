"""Conversations (OpenAI's Conversations API) and their items.

Revision ID: d58b3f1e7a92
Revises: c41e9a7d2b56
Create Date: 2026-12-07 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "d58b3f1e7a92"
down_revision: str | None = "c41e9a7d2b56"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.String(length=128), nullable=False),
        sa.Column("metadata", JSON_TYPE, nullable=False),
        sa.Column("next_position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_conversations_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_conversations_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
        sa.UniqueConstraint("tenant_id", "conversation_id", name="uq_conversations_tenant_conv"),
    )
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_conversations_tenant_id"), ["tenant_id"])
        batch_op.create_index(batch_op.f("ix_conversations_key_id"), ["key_id"])
        batch_op.create_index(batch_op.f("ix_conversations_created_at"), ["created_at"])
    op.create_table(
        "conversation_items",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("conversation_pk", sa.Uuid(), nullable=False),
        sa.Column("item_id", sa.String(length=128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("item", JSON_TYPE, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_conversation_items_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_pk"],
            ["conversations.id"],
            name=op.f("fk_conversation_items_conversation_pk_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversation_items")),
    )
    with op.batch_alter_table("conversation_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_conversation_items_tenant_id"), ["tenant_id"])
        batch_op.create_index(
            "ix_conversation_items_conv_position", ["conversation_pk", "position"]
        )
        batch_op.create_index("ix_conversation_items_tenant_item", ["tenant_id", "item_id"])


def downgrade() -> None:
    op.drop_table("conversation_items")
    op.drop_table("conversations")
