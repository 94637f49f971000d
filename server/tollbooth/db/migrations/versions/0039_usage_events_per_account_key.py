"""A usage event's unique id is unique per billing account: the primary key of usage_events
becomes (unique_id, billing_account_id), as Lago's transaction_id is unique per subscription.
Existing rows are kept (unique by id alone, so unique by the pair). The old key's only reader,
the ingest's `ON CONFLICT (unique_id)`, names the pair from this revision on.

The unique id leads: a key led by the account would be an index on the account too, which
PostgreSQL then prefers for a GetUsage query over `ix_usage_events_account_name_time` (account,
event name, time), the index every usage query is meant to read.

Revision ID: 0039
Revises: 0038
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from tollbooth.db.types import UTCDateTime

revision = "0039"
down_revision = "0038"
branch_labels = None
depends_on = None

# PostgreSQL's name for a primary key created without one (0004's), kept for the new key.
PKEY = "usage_events_pkey"


def _table(columns: list[str]) -> sa.Table:
    """usage_events as 0004 made it, its primary key `columns` (SQLite's copy of the table)."""
    return sa.Table(
        "usage_events",
        sa.MetaData(),
        sa.Column("unique_id", sa.String(200), nullable=False),
        sa.Column("billing_account_id", sa.String(40), nullable=False),
        sa.Column("event_name", sa.String(200), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column(
            "properties",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(*columns, name=PKEY),
        sa.Index(
            "ix_usage_events_account_name_time", "billing_account_id", "event_name", "occurred_at"
        ),
    )


def _set_key(columns: list[str]) -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite changes a primary key only by copying the table (alembic's batch mode), here
        # from its definition rather than a reflection, which would keep the old key too.
        with op.batch_alter_table("usage_events", recreate="always", copy_from=_table(columns)):
            pass
        return
    op.drop_constraint(PKEY, "usage_events", type_="primary")
    op.create_primary_key(PKEY, "usage_events", columns)


def upgrade() -> None:
    _set_key(["unique_id", "billing_account_id"])


def downgrade() -> None:
    # Fails (a unique violation) once two accounts stored one id: that is the point of 0039.
    _set_key(["unique_id"])
