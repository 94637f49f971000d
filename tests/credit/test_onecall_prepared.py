"""The one-call debit's statement on a pooled connection when the function hands requests back.

psycopg prepares a statement (a named server-side prepared statement) before it executes it;
when that execution fails it forgets the name but PostgreSQL keeps the statement. Every
debit the function hands back (SQLSTATE TB001: a depletion, an expiry due, more grants than
the batch, a short balance) on a connection where the call had not yet succeeded left one more
prepared statement in that backend, for the life of the connection (the pool never recycles
one): a workload whose debits all fall back (each drains its balance) grew every backend's
memory without bound.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy.orm import Session

from tests.conftest import make_env
from tests.credit.support import account, check_invariants, debit, grant
from tests.devstack import serving
from tollbooth.app import Deps
from tollbooth.config import Settings

pytestmark = pytest.mark.postgres

ROUNDS = 12


@pytest.fixture
def served(pg_url: str) -> Iterator[tuple[grpc.Channel, Deps]]:
    env = make_env(pg_url, BILLING_RATE_LIMIT_KEY="off", BILLING_RATE_LIMIT_ACCOUNT="off")
    deps = Deps.build(Settings.from_env(env))
    try:
        with serving(deps) as ch:
            yield ch, deps
    finally:
        deps.db.dispose()


def _debit_statements(deps: Deps) -> list[int]:
    """Per connection idle in the server's pool: the prepared statements calling the function."""
    pool = deps.db.engine.pool
    held = [deps.db.engine.raw_connection() for _ in range(pool.checkedin())]
    try:
        counts = []
        for fairy in held:
            cur = fairy.driver_connection.cursor()  # type: ignore[union-attr]
            cur.execute(
                "SELECT count(*) FROM pg_prepared_statements"
                " WHERE statement LIKE '%tollbooth_debit(%'"
            )
            counts.append(cur.fetchone()[0])
            cur.close()
            fairy.driver_connection.rollback()  # type: ignore[union-attr]
        return counts
    finally:
        for fairy in held:
            fairy.close()


def test_debits_handed_back_leave_no_prepared_statement_behind(served) -> None:  # type: ignore[no-untyped-def]
    ch, deps = served
    _, acct, _ = account(ch)
    for _ in range(ROUNDS):
        grant(ch, acct, "1")
        # Drains the balance: a new depletion, which the function hands back.
        assert debit(ch, acct, "1").balance_after == "0"
    counts = _debit_statements(deps)
    assert counts and all(n <= 1 for n in counts), counts
    with Session(deps.db.engine) as s:
        check_invariants(s, acct)
