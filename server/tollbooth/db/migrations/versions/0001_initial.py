"""Accounts, webhook inbox, catalog, idempotency keys.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from tollbooth.db.types import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "billing_accounts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("principal_id", sa.String(200), nullable=False, unique=True),
        sa.Column("email", sa.String(320)),
        sa.Column("name", sa.String(200)),
        sa.Column("stripe_customer_id", sa.String(100), unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "stripe_events",
        sa.Column("event_id", sa.String(100), primary_key=True),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("api_version", sa.String(60)),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("provider_created_at", UTCDateTime()),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("processed_at", UTCDateTime()),
    )
    op.create_table(
        "products",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("stripe_product_id", sa.String(100)),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("entitlements", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_products_order", "products", ["active", "position", "seq"])
    op.create_table(
        "prices",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("product_id", sa.String(40), sa.ForeignKey("products.id"), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("unit_amount", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("interval", sa.String(8)),
        sa.Column("interval_count", sa.Integer()),
        sa.Column("lookup_key", sa.String(200)),
        sa.Column("stripe_price_id", sa.String(100)),
        sa.Column("stackable", sa.Boolean(), nullable=False),
        sa.Column("subscription_group", sa.String(200)),
        sa.Column("credit_grants", sa.JSON(), nullable=False),
        sa.Column("entitlements", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("nickname", sa.String(200), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_prices_order", "prices", ["product_id", "active", "position", "seq"])
    op.create_index(
        "uq_prices_active_lookup_key",
        "prices",
        ["lookup_key"],
        unique=True,
        sqlite_where=sa.text("active AND lookup_key IS NOT NULL"),
        postgresql_where=sa.text("active AND lookup_key IS NOT NULL"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(100), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("response", sa.LargeBinary()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "sequences",
        sa.Column("name", sa.String(60), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "sequences",
        "idempotency_keys",
        "prices",
        "products",
        "stripe_events",
        "billing_accounts",
    ):
        op.drop_table(table)
