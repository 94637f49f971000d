"""Checkout intents and one open checkout per account and subscription group.

A checkout session row is now written before the provider is called (status `pending`, the
request's URLs and a fingerprint of what it asks for), so a retry or a second request can
complete it; `checkout_slots` names the one live checkout of each account and group.

Revision ID: 0007
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

from tollbooth.db.types import UTCDateTime

revision = "0007"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checkout_sessions") as batch:
        batch.add_column(sa.Column("success_url", sa.Text()))
        batch.add_column(sa.Column("cancel_url", sa.Text()))
        batch.add_column(sa.Column("fingerprint", sa.String(64)))
    op.create_table(
        "checkout_slots",
        sa.Column(
            "billing_account_id",
            sa.String(40),
            sa.ForeignKey("billing_accounts.id"),
            primary_key=True,
        ),
        sa.Column("subscription_group", sa.String(250), primary_key=True),
        sa.Column("checkout_session_id", sa.String(40), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("checkout_slots")
    with op.batch_alter_table("checkout_sessions") as batch:
        batch.drop_column("fingerprint")
        batch.drop_column("cancel_url")
        batch.drop_column("success_url")
