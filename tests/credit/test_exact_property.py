"""Issue 14, finding 7: a property test over wide amounts (SQLite and PostgreSQL).

Hypothesis draws sequences of grants, debits, holds (reserve, commit part or all, release)
and usage burns with amounts up to the storage cap (20 integer and 18 fractional digits; burns
beyond it, whose rest is overage). After every commit the SQL invariants hold
(`check_invariants`: the ledger sums to the balance, the reserved figure and the overage,
exactly) and the figures equal a model computed in `amounts.CONTEXT`. The only refusals are
the documented ones: INSUFFICIENT_CREDITS, and AMOUNT_INVALID for a grant past the cap.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.credit.support import check_invariants
from tollbooth import amounts, errors
from tollbooth.accounts.service import ensure_account
from tollbooth.auth.caller import SERVICE
from tollbooth.credit import burns, debits, grants, queries, reservations

T = dt.datetime(2033, 1, 1, tzinfo=dt.UTC)
EXAMPLES = 300 if os.environ.get("BILLING_SOAK") == "1" else 30


def _amount(whole: int, frac: int) -> str:
    return f"{whole}.{frac:018d}"


# Storable amounts with an 18th fractional digit: mostly 29 to 38 significant digits (past
# the default context's 28), sometimes any size.
FRACTION = st.integers(1, 10**18 - 1).filter(lambda f: f % 10 != 0)
STORABLE = st.builds(
    _amount, st.one_of(st.integers(10**10, 10**20 - 1), st.integers(0, 10**20 - 1)), FRACTION
)
BURN = st.one_of(STORABLE, st.builds(_amount, st.integers(10**20, 10**30), FRACTION))
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), STORABLE),
        # Half the time a share of what is free (so most succeed), else the amount drawn.
        st.tuples(st.just("debit"), STORABLE, st.integers(0, 10**18)),
        st.tuples(st.just("reserve"), STORABLE, st.integers(0, 10**18)),
        st.tuples(st.just("commit"), st.integers(0, 5), st.integers(0, 10**18)),
        st.tuples(st.just("release"), st.integers(0, 5)),
        st.tuples(st.just("burn"), BURN),
    ),
    min_size=1,
    max_size=12,
)


def run(db, ops) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as s:
        acct = ensure_account(s, f"p-{uuid.uuid4().hex[:10]}")[0].id
    free = reserved = owed = amounts.ZERO
    holds: list[tuple[str, Decimal]] = []
    for n, op in enumerate(ops):
        clock = (lambda moment: lambda: moment)(T + dt.timedelta(seconds=n))
        kind = op[0]
        if kind in ("debit", "reserve") and op[2] % 2:
            fraction = amounts.CONTEXT.scaleb(Decimal(op[2]), -18)
            # 1 stands for exactly the balance.
            share = free if op[2] == 1 else amounts.to_quantum(amounts.mul(free, fraction))
            if share > 0:
                op = (kind, amounts.fmt(share))
        try:
            with db.transaction() as s:
                if kind == "grant":
                    value = Decimal(op[1])
                    grants.grant(
                        s,
                        SERVICE,
                        acct,
                        credit_type="units",
                        amount=op[1],
                        reason="",
                        priority=0,
                        expire_at=None,
                        request_id="",
                        metadata={},
                        clock=clock,
                    )
                    paid = min(value, owed)
                    free = amounts.add(free, amounts.sub(value, paid))
                    owed = amounts.sub(owed, paid)
                elif kind == "debit":
                    debits.debit(
                        s,
                        SERVICE,
                        acct,
                        credit_type="units",
                        amount=op[1],
                        reason="",
                        request_id=uuid.uuid4().hex,
                        metadata={},
                        clock=clock,
                    )
                    free = amounts.sub(free, Decimal(op[1]))
                elif kind == "reserve":
                    r = reservations.reserve(
                        s,
                        SERVICE,
                        acct,
                        credit_type="units",
                        amount=op[1],
                        ttl_sec=3600,
                        reason="",
                        request_id="",
                        clock=clock,
                    )
                    holds.append((r.id, Decimal(op[1])))
                    free = amounts.sub(free, Decimal(op[1]))
                    reserved = amounts.add(reserved, Decimal(op[1]))
                elif kind in ("commit", "release"):
                    if not holds:
                        continue
                    rid, held = holds.pop(op[1] % len(holds))
                    if kind == "commit":
                        # A share of the hold, exact to the 18th digit.
                        actual = amounts.to_quantum(
                            amounts.mul(held, amounts.CONTEXT.scaleb(Decimal(op[2]), -18))
                        )
                        reservations.commit(
                            s,
                            SERVICE,
                            acct,
                            reservation_id=rid,
                            amount=amounts.fmt(actual),
                            request_id="",
                            clock=clock,
                        )
                    else:
                        actual = amounts.ZERO
                        reservations.release(
                            s, SERVICE, acct, reservation_id=rid, request_id="", clock=clock
                        )
                    free = amounts.add(free, amounts.sub(held, actual))
                    reserved = amounts.sub(reserved, held)
                else:
                    value = Decimal(op[1])
                    burns.burn(
                        s,
                        acct,
                        "units",
                        value,
                        reason="usage:m",
                        metadata={"event_ids": f'["e{n}"]'},
                        clock=clock,
                    )
                    taken = min(free, value)
                    free = amounts.sub(free, taken)
                    owed = amounts.add(owed, amounts.sub(value, taken))
        except errors.DomainError as exc:
            if kind == "grant":
                assert exc.reason == "AMOUNT_INVALID", exc
                assert amounts.add(free, reserved, Decimal(op[1])) > amounts.MAX_TOTAL
            else:
                assert kind in ("debit", "reserve") and exc.reason == "INSUFFICIENT_CREDITS"
                assert Decimal(op[1]) > free
        with db.transaction(readonly=True) as s:
            check_invariants(s, acct)
            view = queries.balance(s, SERVICE, acct, "units", T + dt.timedelta(seconds=n))
            assert (view.balance, view.reserved, view.overage) == (free, reserved, owed), op


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(first=STORABLE, ops=OPS)
def test_wide_amounts_keep_the_ledger_equal_to_the_balances(db, first, ops) -> None:  # type: ignore[no-untyped-def]
    run(db, [("grant", first), *ops])
