"""Accounts as a resource: metadata, archive, customer fields and the provider sync version.

Revision ID: 0010
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

from tollbooth.db.types import UTCDateTime

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("billing_accounts") as batch:
        batch.add_column(sa.Column("metadata", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("description", sa.Text(), nullable=True))
        batch.add_column(sa.Column("phone", sa.String(40), nullable=True))
        batch.add_column(sa.Column("archived_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("updated_at", UTCDateTime(), nullable=True))
        # Every change the provider customer must learn bumps `version`; `customer_version`
        # is the last version the provider acknowledged (intent committed, call, record).
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(
            sa.Column("customer_version", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("customer_deleted_at", UTCDateTime(), nullable=True))
        batch.create_index("ix_billing_accounts_email", ["email", "id"])


def downgrade() -> None:
    with op.batch_alter_table("billing_accounts") as batch:
        batch.drop_index("ix_billing_accounts_email")
        for column in (
            "customer_deleted_at",
            "customer_version",
            "version",
            "updated_at",
            "archived_at",
            "phone",
            "description",
            "metadata",
        ):
            batch.drop_column(column)
