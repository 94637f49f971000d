"""Migration 0009 (SQLite and PostgreSQL): overage recorded before the ledger kept it gets one
OVERAGE entry, so the ledger sums to every balance's overage afterwards."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from tests.credit.support import check_invariants
from tollbooth import amounts
from tollbooth.db import normalize_url
from tollbooth.db.migrate import alembic_config, downgrade, upgrade
from tollbooth.db.models import CreditBalance, CreditLedgerEntry

# 40 significant digits: more than NUMERIC(38, 18) holds, as overage may be.
OWED = "123456789012345678901234.1234567890123456"


def test_overage_from_before_0009_gets_its_ledger_entry(database_url: str) -> None:
    url = normalize_url(database_url)
    # to the revision before 0009, wherever 0009 sits in the chain
    parent = ScriptDirectory.from_config(alembic_config(url)).get_revision("0009").down_revision
    downgrade(database_url, str(parent))
    owing, clear = f"acct_{uuid.uuid4().hex[:24]}", f"acct_{uuid.uuid4().hex[:24]}"
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for acct, overage in ((owing, OWED), (clear, "0")):
                conn.execute(
                    text(
                        "INSERT INTO billing_accounts (id, principal_id, created_at)"
                        " VALUES (:id, :p, :now)"
                    ),
                    {"id": acct, "p": f"p-{acct}", "now": dt.datetime(2030, 1, 1)},
                )
                conn.execute(
                    text(
                        "INSERT INTO credit_balances (billing_account_id, credit_type, balance,"
                        " reserved, seq, depleted, depletions, updated_at, overage)"
                        " VALUES (:a, 'units', '0', '0', 0, false, 0, :now, :o)"
                    ),
                    {"a": acct, "now": dt.datetime(2030, 1, 1), "o": overage},
                )
    finally:
        upgrade(database_url)
    try:
        with Session(engine) as s:
            (entry,) = s.scalars(
                select(CreditLedgerEntry).where(CreditLedgerEntry.billing_account_id == owing)
            )
            assert (entry.kind, entry.seq, entry.amount, entry.overage) == (
                "overage",
                1,
                Decimal(0),
                Decimal(OWED),
            )
            row = s.get(CreditBalance, (owing, "units"))
            assert row is not None and (row.seq, amounts.fmt(row.overage)) == (1, OWED)
            assert not list(
                s.scalars(
                    select(CreditLedgerEntry).where(CreditLedgerEntry.billing_account_id == clear)
                )
            )
            check_invariants(s, owing, clear)
    finally:
        engine.dispose()
