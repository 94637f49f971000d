"""Notification deliveries: the lease of the POST in flight, apart from the next attempt.

A claim leased a delivery by pushing `next_attempt_at` past the send, so a resend (which makes
it due at once) during the POST let another process send the same message beside it. The lease
now has its own column: a leased delivery is not claimed before the lease ends or its attempt
is recorded, whatever `next_attempt_at` says.

Revision ID: 0024
Revises: 0023
"""

import sqlalchemy as sa
from alembic import op

from tollbooth.db.types import UTCDateTime

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notification_deliveries") as batch:
        batch.add_column(sa.Column("leased_until", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notification_deliveries") as batch:
        batch.drop_column("leased_until")
