"""Indexes for the console's keyset pages (newest first, then by id): the events page, all
or by status (`console.inbox.events`), and an account's notifications
(`console.inbox.notifications`). Without them each page sorted the whole filtered table. They
live here only, as 0031's do (db/models.py is at its length limit).

Revision ID: 0034
Revises: 0033
"""

from alembic import op

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_stripe_events_received", "stripe_events", ["received_at", "event_id"])
    op.create_index(
        "ix_stripe_events_status_received", "stripe_events", ["status", "received_at", "event_id"]
    )
    op.create_index(
        "ix_notification_outbox_account",
        "notification_outbox",
        ["billing_account_id", "created_at", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_notification_outbox_account", table_name="notification_outbox")
    op.drop_index("ix_stripe_events_status_received", table_name="stripe_events")
    op.drop_index("ix_stripe_events_received", table_name="stripe_events")
