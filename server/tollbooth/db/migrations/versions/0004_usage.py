"""Usage metering: usage events (unique id kept forever) and billable metrics.

Revision ID: 0004
Revises: 0003

"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from tollbooth.db.types import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_events",
        sa.Column("unique_id", sa.String(200), primary_key=True),
        sa.Column("billing_account_id", sa.String(40), nullable=False),
        sa.Column("event_name", sa.String(200), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column(
            "properties",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("received_at", UTCDateTime(), nullable=False),
    )
    # Every usage query is one account, one event name, one period.
    op.create_index(
        "ix_usage_events_account_name_time",
        "usage_events",
        ["billing_account_id", "event_name", "occurred_at"],
    )
    op.create_table(
        "billable_metrics",
        sa.Column("code", sa.String(100), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("event_name", sa.String(200), nullable=False),
        sa.Column("aggregation", sa.String(20), nullable=False),
        sa.Column("property", sa.String(200), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("credit_type", sa.String(100)),
        sa.Column("credit_rate", sa.String(64)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_billable_metrics_event_name", "billable_metrics", ["event_name"])


def downgrade() -> None:
    op.drop_index("ix_billable_metrics_event_name", "billable_metrics")
    op.drop_table("billable_metrics")
    op.drop_index("ix_usage_events_account_name_time", "usage_events")
    op.drop_table("usage_events")
