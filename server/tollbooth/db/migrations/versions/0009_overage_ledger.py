"""Overage in the credit ledger: each entry's change to the balance's overage.

Overage recorded before this revision has no ledger entry: each balance that owes some gets
one OVERAGE entry carrying it (amount 0, dated now), so the ledger's overage column sums to
every balance's overage from here on.

Revision ID: 0009
Revises: 0013 (0006 as assigned; chained after main's 0013 so the merged branch has one head)
"""

import datetime as dt
import secrets
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

from tollbooth.db.models import ExactDecimal, UnboundedDecimal
from tollbooth.db.types import UTCDateTime

revision = "0009"
down_revision = "0013"
branch_labels = None
depends_on = None

NOTE = "overage recorded before the ledger kept it"


def upgrade() -> None:
    with op.batch_alter_table("credit_ledger") as batch:
        batch.add_column(
            sa.Column("overage", UnboundedDecimal(), nullable=False, server_default="0")
        )
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT billing_account_id, credit_type, balance, seq, overage FROM credit_balances"
        )
    ).all()
    insert = sa.text(
        "INSERT INTO credit_ledger (id, billing_account_id, credit_type, seq, kind,"
        " amount, balance_after, reason, request_id, created_at, overage)"
        " VALUES (:id, :a, :t, :seq, 'overage', :zero, :balance, :reason, '', :now, :owed)"
    ).bindparams(
        sa.bindparam("zero", type_=ExactDecimal()),
        sa.bindparam("balance", type_=ExactDecimal()),
        sa.bindparam("now", type_=UTCDateTime()),
        sa.bindparam("owed", type_=UnboundedDecimal()),
    )
    now = dt.datetime.now(dt.UTC)
    for account, ctype, balance, seq, overage in rows:
        owed = Decimal(str(overage))
        if owed <= 0:
            continue
        bind.execute(
            insert,
            {
                "id": f"cle_{secrets.token_hex(12)}",
                "a": account,
                "t": ctype,
                "seq": seq + 1,
                "zero": Decimal(0),
                "balance": Decimal(str(balance)),
                "reason": NOTE,
                "now": now,
                "owed": owed,
            },
        )
        bind.execute(
            sa.text(
                "UPDATE credit_balances SET seq = :seq WHERE billing_account_id = :a"
                " AND credit_type = :t"
            ),
            {"seq": seq + 1, "a": account, "t": ctype},
        )


def downgrade() -> None:
    # OVERAGE and OVERAGE_PAID entries stay (they keep the ledger numbered without gaps).
    with op.batch_alter_table("credit_ledger") as batch:
        batch.drop_column("overage")
