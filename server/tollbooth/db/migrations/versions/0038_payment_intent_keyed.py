"""Payment intents: whether the request that made one carried a request_id (`keyed`). One
made without (seed 003 sends none) whose provider call failed can never be retried by its
client, so `tollbooth reconcile` cancels it instead of sending it (`payments.intents`).
Rows from before are taken as keyed: the sweep treats them as it did.

Revision ID: 0038
Revises: 0037
"""

import sqlalchemy as sa
from alembic import op

revision = "0038"
down_revision = "0037"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payment_intents") as batch:
        batch.add_column(sa.Column("keyed", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("payment_intents") as batch:
        batch.drop_column("keyed")
