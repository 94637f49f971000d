"""Payment intents (PaymentService), and purchases made by one (`purchases.payment_intent_id`;
`checkout_session_id` is empty on those).

Revision ID: 0017
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

from tollbooth.db.types import UTCDateTime

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payment_intents",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "billing_account_id",
            sa.String(40),
            sa.ForeignKey("billing_accounts.id"),
            nullable=False,
        ),
        sa.Column("stripe_payment_intent_id", sa.String(200), unique=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("receipt_email", sa.String(320), nullable=False),
        sa.Column("price_id", sa.String(40)),
        sa.Column("client_secret", sa.Text()),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("purchase_id", sa.String(40)),
        sa.Column("failure_code", sa.String(100)),
        sa.Column("decline_code", sa.String(100)),
        sa.Column("failure_message", sa.Text()),
        sa.Column("failed_at", UTCDateTime()),
        sa.Column("succeeded_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_payment_intents_account", "payment_intents", ["billing_account_id", "created_at"]
    )
    with op.batch_alter_table("purchases") as batch:
        batch.alter_column("checkout_session_id", existing_type=sa.String(40), nullable=True)
        batch.add_column(sa.Column("payment_intent_id", sa.String(40)))
        batch.create_unique_constraint("uq_purchases_payment_intent", ["payment_intent_id"])


def downgrade() -> None:
    with op.batch_alter_table("purchases") as batch:
        batch.drop_constraint("uq_purchases_payment_intent", type_="unique")
        batch.drop_column("payment_intent_id")
        batch.alter_column("checkout_session_id", existing_type=sa.String(40), nullable=False)
    op.drop_index("ix_payment_intents_account", table_name="payment_intents")
    op.drop_table("payment_intents")
