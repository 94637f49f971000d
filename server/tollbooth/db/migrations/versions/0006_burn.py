"""Credit burn of usage metrics: the overage kept beside each credit balance.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from tollbooth.db.models import UnboundedDecimal

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("credit_balances") as batch:
        batch.add_column(
            sa.Column("overage", UnboundedDecimal(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("credit_balances") as batch:
        batch.drop_column("overage")
