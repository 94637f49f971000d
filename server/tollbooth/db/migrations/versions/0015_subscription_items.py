"""Every recurring item of a subscription: subscription_items, filled from each subscription's
first item (the only one recorded before); the next sync of a subscription rewrites them all.

Revision ID: 0015
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscription_items",
        sa.Column(
            "subscription_id",
            sa.String(40),
            sa.ForeignKey("subscriptions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("stripe_price_id", sa.String(200)),
        sa.Column("price_id", sa.String(40)),
        sa.Column("lookup_key", sa.String(200)),
        sa.Column("subscription_group", sa.String(200)),
        sa.Column("stackable", sa.Boolean(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
    )
    op.execute(
        "INSERT INTO subscription_items (subscription_id, position, stripe_price_id, price_id,"
        " lookup_key, subscription_group, stackable, quantity)"
        " SELECT id, 0, stripe_price_id, price_id, lookup_key, subscription_group, stackable,"
        " quantity FROM subscriptions WHERE stripe_price_id IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_table("subscription_items")
