"""subscriptions.cancel_at: Stripe's `cancel_at`, a cancellation the merchant scheduled for any
date (the dashboard's "cancel on a custom date", or the API). Once it has passed, the
subscription holds and grants nothing, whether or not its `customer.subscription.deleted` has
arrived, as one set to cancel at its period's end stops at that end
(`subscriptions.repository.ended`). Rows written before it read NULL (no such date) until
their next event rewrites them from Stripe's object.

Revision ID: 0035
Revises: 0034
"""

import sqlalchemy as sa
from alembic import op

from tollbooth.db.types import UTCDateTime

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("cancel_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("cancel_at")
