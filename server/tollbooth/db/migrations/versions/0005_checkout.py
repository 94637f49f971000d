"""Checkout: checkout sessions, subscriptions, one-time purchases, webhook effect guards.

Revision ID: 0005
Revises: 0004

"""

import sqlalchemy as sa
from alembic import op

from tollbooth.db.types import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkout_sessions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "billing_account_id",
            sa.String(40),
            sa.ForeignKey("billing_accounts.id"),
            nullable=False,
        ),
        sa.Column("stripe_checkout_session_id", sa.String(200), unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payment_status", sa.String(24), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("url", sa.Text()),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("amount_total", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("client_reference", sa.String(1000), nullable=False),
        sa.Column("stripe_subscription_id", sa.String(200)),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("fulfilled_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_checkout_sessions_account", "checkout_sessions", ["billing_account_id", "created_at"]
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "billing_account_id",
            sa.String(40),
            sa.ForeignKey("billing_accounts.id"),
            nullable=False,
        ),
        sa.Column("stripe_subscription_id", sa.String(200), unique=True),
        sa.Column("stripe_price_id", sa.String(200)),
        sa.Column("price_id", sa.String(40)),
        sa.Column("lookup_key", sa.String(200)),
        sa.Column("subscription_group", sa.String(200)),
        sa.Column("stackable", sa.Boolean(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("current_period_start", UTCDateTime()),
        sa.Column("current_period_end", UTCDateTime()),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("canceled_at", UTCDateTime()),
        sa.Column("ended_at", UTCDateTime()),
        sa.Column("latest_invoice", sa.String(200)),
        sa.Column("provider_created_at", UTCDateTime()),
        sa.Column("synced_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_subscriptions_account", "subscriptions", ["billing_account_id", "created_at"]
    )
    op.create_table(
        "purchases",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "billing_account_id",
            sa.String(40),
            sa.ForeignKey("billing_accounts.id"),
            nullable=False,
        ),
        sa.Column("checkout_session_id", sa.String(40), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("price_id", sa.String(40)),
        sa.Column("stripe_price_id", sa.String(200)),
        sa.Column("lookup_key", sa.String(200)),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("amount_total", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("checkout_session_id", "line", name="uq_purchases_line"),
    )
    op.create_index("ix_purchases_account", "purchases", ["billing_account_id", "created_at"])
    op.create_table(
        "billing_effects",
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("billing_account_id", sa.String(40)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("billing_effects")
    op.drop_index("ix_purchases_account", "purchases")
    op.drop_table("purchases")
    op.drop_index("ix_subscriptions_account", "subscriptions")
    op.drop_table("subscriptions")
    op.drop_index("ix_checkout_sessions_account", "checkout_sessions")
    op.drop_table("checkout_sessions")
