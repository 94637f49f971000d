"""The webhook inbox stores first, then applies: each event's status, attempts and last error.

Revision ID: 0008
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

from tollbooth.db.types import UTCDateTime

revision = "0008"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stripe_events") as batch:
        batch.add_column(
            sa.Column("status", sa.String(10), nullable=False, server_default="pending")
        )
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_error", sa.String(500)))
        batch.add_column(sa.Column("next_attempt_at", UTCDateTime()))
    op.execute("UPDATE stripe_events SET status = 'applied' WHERE processed_at IS NOT NULL")
    op.execute("UPDATE stripe_events SET next_attempt_at = received_at WHERE processed_at IS NULL")
    op.create_index("ix_stripe_events_due", "stripe_events", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_stripe_events_due", "stripe_events")
    with op.batch_alter_table("stripe_events") as batch:
        batch.drop_column("next_attempt_at")
        batch.drop_column("last_error")
        batch.drop_column("attempts")
        batch.drop_column("status")
