"""A provider price names at most one active price: the webhooks map a subscription item's
Stripe price back to the catalog price bought (`provider.repository.price_by_stripe_id`), so an
explicit `stripe_price_id` that another active price held made that mapping pick one of two.
A partial unique index, as on active lookup keys, now refuses the second link. It lives here
only, as the triggers of 0019 and 0022 do (db/models.py is at its length limit); the catalog
repository maps its refusal (`StripePriceTaken`).

Where active prices already share one, the newest keeps it (the one the mapping already
chose) and the older ones are unlinked: each gets a provider price of its own, with its own
amount, on its next checkout or `catalog apply --sync-stripe`.

Revision ID: 0031
Revises: 0030
"""

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE prices SET stripe_price_id = NULL"
            " WHERE active AND stripe_price_id IS NOT NULL AND EXISTS ("
            " SELECT 1 FROM prices AS newer"
            " WHERE newer.active AND newer.stripe_price_id = prices.stripe_price_id"
            " AND newer.seq > prices.seq)"
        )
    )
    op.create_index(
        "uq_prices_active_stripe_price_id",
        "prices",
        ["stripe_price_id"],
        unique=True,
        sqlite_where=sa.text("active AND stripe_price_id IS NOT NULL"),
        postgresql_where=sa.text("active AND stripe_price_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_prices_active_stripe_price_id", table_name="prices")
