"""Payment intents: a payment for a price bought once (one-time, not stackable) that the
account held already by another purchase is refunded as a duplicate; the intent records the
purchase it duplicated, the provider's refund and when.

Revision ID: 0029
Revises: 0028
"""

import sqlalchemy as sa
from alembic import op

from tollbooth.db.types import UTCDateTime

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payment_intents") as batch:
        batch.add_column(sa.Column("duplicate_of", sa.String(40), nullable=True))
        batch.add_column(sa.Column("refund_id", sa.String(200), nullable=True))
        batch.add_column(sa.Column("refunded_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payment_intents") as batch:
        batch.drop_column("refunded_at")
        batch.drop_column("refund_id")
        batch.drop_column("duplicate_of")
