"""Stripe billing: each tenant's sealed Stripe account, and per period a run, one record per
customer (its invoice) and one line per key (its invoice item); handled Stripe events.

Revision ID: 5a3c9e71b2d4
Revises: 29d5871500cb
Create Date: 2026-11-22 02:44:09.880571
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5a3c9e71b2d4"
down_revision: str | None = "29d5871500cb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "billing_runs",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("markup_bps", sa.Integer(), nullable=False),
        sa.Column("syncs", sa.Integer(), nullable=False),
        sa.Column("last_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_billing_runs_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_runs")),
        sa.UniqueConstraint("tenant_id", "period", name="uq_billing_runs_period"),
    )
    with op.batch_alter_table("billing_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_runs_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_billing_runs_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "billing_stripe_accounts",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("secret_key", sa.Text(), nullable=False),
        sa.Column("webhook_secret", sa.Text(), nullable=False),
        sa.Column("secret_key_last4", sa.String(length=4), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("markup_bps", sa.Integer(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_billing_stripe_accounts_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_stripe_accounts")),
        sa.UniqueConstraint("tenant_id", name=op.f("uq_billing_stripe_accounts_tenant_id")),
    )
    with op.batch_alter_table("billing_stripe_accounts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_stripe_accounts_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "billing_stripe_events",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("invoice_id", sa.String(length=255), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_billing_stripe_events_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_stripe_events")),
        sa.UniqueConstraint("tenant_id", "event_id", name="uq_billing_stripe_events_event"),
    )
    with op.batch_alter_table("billing_stripe_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_stripe_events_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "billing_records",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("stripe_invoice_id", sa.String(length=255), nullable=True),
        sa.Column("invoice_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("invoice_status", sa.String(length=32), nullable=True),
        sa.Column("carried_into_id", sa.Uuid(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["billing_runs.id"],
            name=op.f("fk_billing_records_run_id_billing_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_billing_records_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_records")),
        sa.UniqueConstraint("tenant_id", "customer_id", "period", name="uq_billing_records_once"),
    )
    with op.batch_alter_table("billing_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_records_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_billing_records_run_id"), ["run_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_billing_records_stripe_invoice_id"), ["stripe_invoice_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_billing_records_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "billing_lines",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("key_name", sa.String(length=200), nullable=False),
        sa.Column("spend_micros", sa.BigInteger(), nullable=False),
        sa.Column("carried_in_micros", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("stripe_invoice_item_id", sa.String(length=255), nullable=True),
        sa.Column("item_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["billing_records.id"],
            name=op.f("fk_billing_lines_record_id_billing_records"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_billing_lines_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_lines")),
        sa.UniqueConstraint("record_id", "key_id", name="uq_billing_lines_key"),
    )
    with op.batch_alter_table("billing_lines", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_billing_lines_record_id"), ["record_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_billing_lines_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("billing_lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_lines_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_billing_lines_record_id"))

    op.drop_table("billing_lines")
    with op.batch_alter_table("billing_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_records_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_billing_records_stripe_invoice_id"))
        batch_op.drop_index(batch_op.f("ix_billing_records_run_id"))
        batch_op.drop_index(batch_op.f("ix_billing_records_created_at"))

    op.drop_table("billing_records")
    with op.batch_alter_table("billing_stripe_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_stripe_events_tenant_id"))

    op.drop_table("billing_stripe_events")
    with op.batch_alter_table("billing_stripe_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_stripe_accounts_created_at"))

    op.drop_table("billing_stripe_accounts")
    with op.batch_alter_table("billing_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_runs_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_billing_runs_created_at"))

    op.drop_table("billing_runs")
