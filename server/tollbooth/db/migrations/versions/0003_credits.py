"""Credits: balances, grants, reservations and the ledger.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from tollbooth.db.models import ExactDecimal
from tollbooth.db.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_balances",
        sa.Column(
            "billing_account_id",
            sa.String(40),
            sa.ForeignKey("billing_accounts.id"),
            primary_key=True,
        ),
        sa.Column("credit_type", sa.String(100), primary_key=True),
        sa.Column("balance", ExactDecimal(), nullable=False),
        sa.Column("reserved", ExactDecimal(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("next_event_at", UTCDateTime()),
        sa.Column("depleted", sa.Boolean(), nullable=False),
        sa.Column("depletions", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "credit_grants",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "billing_account_id",
            sa.String(40),
            sa.ForeignKey("billing_accounts.id"),
            nullable=False,
        ),
        sa.Column("credit_type", sa.String(100), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("remaining", ExactDecimal(), nullable=False),
        sa.Column("held", ExactDecimal(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("expire_at", UTCDateTime()),
        sa.Column("expiry_key", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime()),
    )
    op.create_index(
        "ix_credit_grants_order",
        "credit_grants",
        ["billing_account_id", "credit_type", "priority", "expiry_key", "seq"],
    )
    op.create_table(
        "credit_reservations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "billing_account_id",
            sa.String(40),
            sa.ForeignKey("billing_accounts.id"),
            nullable=False,
        ),
        sa.Column("credit_type", sa.String(100), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("committed_amount", ExactDecimal()),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("expire_at", UTCDateTime(), nullable=False),
        sa.Column("allocations", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("debit_id", sa.String(40)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime()),
    )
    op.create_index(
        "ix_credit_reservations_open",
        "credit_reservations",
        ["billing_account_id", "credit_type", "state"],
    )
    op.create_table(
        "credit_ledger",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "billing_account_id",
            sa.String(40),
            sa.ForeignKey("billing_accounts.id"),
            nullable=False,
        ),
        sa.Column("credit_type", sa.String(100), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("balance_after", ExactDecimal(), nullable=False),
        sa.Column("grant_id", sa.String(40)),
        sa.Column("debit_id", sa.String(40)),
        sa.Column("reservation_id", sa.String(40)),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("allocations", sa.JSON()),
        sa.Column("metadata", sa.JSON()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint(
            "billing_account_id", "credit_type", "seq", name="uq_credit_ledger_seq"
        ),
    )
    op.create_index(
        "ix_credit_ledger_listing",
        "credit_ledger",
        ["billing_account_id", "created_at", "seq", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_credit_ledger_listing", "credit_ledger")
    op.drop_table("credit_ledger")
    op.drop_index("ix_credit_reservations_open", "credit_reservations")
    op.drop_table("credit_reservations")
    op.drop_index("ix_credit_grants_order", "credit_grants")
    op.drop_table("credit_grants")
    op.drop_table("credit_balances")
