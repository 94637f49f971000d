"""Purchases: the provider PaymentIntent that paid each, and when a full refund of that payment
was recorded. A refunded one-time purchase is no longer held: what it entitles ends with the
refund (a purchase recorded before this revision has no PaymentIntent and stays held).

Revision ID: 0025
Revises: 0024
"""

import sqlalchemy as sa
from alembic import op

from tollbooth.db.types import UTCDateTime

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("purchases") as batch:
        batch.add_column(sa.Column("stripe_payment_intent_id", sa.String(200), nullable=True))
        batch.add_column(sa.Column("refunded_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("purchases") as batch:
        batch.drop_column("refunded_at")
        batch.drop_column("stripe_payment_intent_id")
