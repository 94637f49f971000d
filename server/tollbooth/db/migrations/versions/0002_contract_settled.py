"""Product keys, the notification outbox, caller-scoped idempotency keys.

Revision ID: 0002
Revises: 0001
"""

import json

import sqlalchemy as sa
from alembic import op

from tollbooth.db.types import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CATALOG_KEY = "catalog_key"


def upgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.add_column(sa.Column("key", sa.String(40)))
    # Catalog as code kept the key in metadata; it becomes a column.
    conn = op.get_bind()
    products = sa.table(
        "products",
        sa.column("id", sa.String),
        sa.column("key", sa.String),
        sa.column("metadata", sa.JSON),
    )
    for row in conn.execute(sa.select(products.c.id, products.c.metadata)).all():
        metadata = (
            row.metadata if isinstance(row.metadata, dict) else json.loads(row.metadata or "{}")
        )
        key = metadata.pop(CATALOG_KEY, None)
        if key:
            conn.execute(
                products.update()
                .where(products.c.id == row.id)
                .values(key=str(key)[:40], metadata=metadata)
            )
    op.create_index("uq_products_key", "products", ["key"], unique=True)

    # Keys are now scoped by caller and store whole responses: old rows mean nothing.
    op.execute("DELETE FROM idempotency_keys")

    op.create_table(
        "notification_outbox",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("billing_account_id", sa.String(40)),
        sa.Column("dedupe_key", sa.String(200), unique=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime()),
        sa.Column("attempts", sa.Integer(), nullable=False),
    )
    op.create_index(
        "ix_notification_outbox_pending", "notification_outbox", ["delivered_at", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_notification_outbox_pending", "notification_outbox")
    op.drop_table("notification_outbox")
    op.drop_index("uq_products_key", "products")
    with op.batch_alter_table("products") as batch:
        batch.drop_column("key")
