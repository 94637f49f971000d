"""Purchases PaymentService recorded before 0025 learn the PaymentIntent that paid them (their
`payment_intents` row names it), so a full refund of that payment ends them as it ends a new
one; before, such a refund voided their credits and left what they entitle held. A checkout's
purchase recorded before 0025 has no such row and keeps no PaymentIntent (it stays held).

Revision ID: 0026
Revises: 0025
"""

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE purchases SET stripe_payment_intent_id = ("
        " SELECT payment_intents.stripe_payment_intent_id FROM payment_intents"
        " WHERE payment_intents.id = purchases.payment_intent_id)"
        " WHERE stripe_payment_intent_id IS NULL AND payment_intent_id IS NOT NULL"
    )


def downgrade() -> None:
    pass  # the column stays as 0025 made it; 0025's downgrade drops it
