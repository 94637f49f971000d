"""A Stripe product is linked by at most one catalog product, archived ones included (an
archived product may be restored with its link): a partial unique index refuses the second
link, which the catalog repository maps (`StripeProductTaken`, 409 ALREADY_EXISTS). It lives
here only, as 0031's does (db/models.py is at its length limit).

Where products already share one, the newest keeps it and the older ones are unlinked: a
sync (`catalog apply --sync-stripe`, or the next checkout) gives each its own.

Revision ID: 0032
Revises: 0031
"""

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE products SET stripe_product_id = NULL"
            " WHERE stripe_product_id IS NOT NULL AND EXISTS ("
            " SELECT 1 FROM products AS newer"
            " WHERE newer.stripe_product_id = products.stripe_product_id"
            " AND newer.seq > products.seq)"
        )
    )
    op.create_index(
        "uq_products_stripe_product_id",
        "products",
        ["stripe_product_id"],
        unique=True,
        sqlite_where=sa.text("stripe_product_id IS NOT NULL"),
        postgresql_where=sa.text("stripe_product_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_products_stripe_product_id", table_name="products")
