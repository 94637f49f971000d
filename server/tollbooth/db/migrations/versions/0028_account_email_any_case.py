"""Account lookups by e-mail ignore case (`Billing@Acme.com` is `billing@acme.com`): the index
they use is on `lower(email)`, as the queries compare; the address itself is stored as given.

Revision ID: 0028
Revises: 0027
"""

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_billing_accounts_email", table_name="billing_accounts")
    op.create_index(
        "ix_billing_accounts_email_lower", "billing_accounts", [sa.text("lower(email)"), "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_billing_accounts_email_lower", table_name="billing_accounts")
    op.create_index("ix_billing_accounts_email", "billing_accounts", ["email", "id"])
