"""Notification endpoints keep every secret a rotation replaced while it still signs, not only
the last one: two rotations within 24 hours no longer cut the first old secret's 24 hours short.

Revision ID: 0027
Revises: 0026
"""

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notification_endpoints") as batch:
        batch.add_column(sa.Column("earlier_secrets", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notification_endpoints") as batch:
        batch.drop_column("earlier_secrets")
