"""Index for the expiry sweeper (`credit.sweeper`): the balances whose next event (a grant's
expiry, a hold's lapse) is due, soonest first, without reading the whole table every poll.
It lives here only, as 0031's and 0034's do (db/models.py is at its length limit).

Revision ID: 0037
Revises: 0036
"""

from alembic import op

revision = "0037"
down_revision = "0036"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_credit_balances_next_event_at", "credit_balances", ["next_event_at"])


def downgrade() -> None:
    op.drop_index("ix_credit_balances_next_event_at", table_name="credit_balances")
