"""Issue 14, finding 8 on PostgreSQL: concurrent burns and grants settle overage exactly.

Burners (usage ingest through a metric with a credit burn) and granters (GrantCredits) run at
once, each thread with its own channel, spread over two servers on one database. A grant pays
overage back first and a burn takes the balance first, so whatever the interleaving:

- after every ledger entry, the balance and the overage are never both positive;
- balance - overage = granted - burned, so the final figures are max(granted - burned, 0) and
  max(burned - granted, 0) exactly, on an account whose grants fall short and on one whose
  grants exceed the burns;
- the SQL invariants hold (the ledger sums to the balance and to the overage).

A grant that read the overage without the balance lock would pay back what a concurrent grant
already paid (overage below zero) or miss a concurrent burn's overage (both positive).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal

import grpc
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from billing.v1 import usage_pb2
from tests.conftest import SERVICE_MD
from tests.credit.support import check_invariants_at, grant
from tests.devstack import grpc_server
from tests.usage.burn_support import balance, burning_metric
from tests.usage.support import ACCEPTED, account, event, usage_stub
from tollbooth import amounts
from tollbooth.app import Deps
from tollbooth.db import normalize_url
from tollbooth.db.models import CreditLedgerEntry

pytestmark = pytest.mark.postgres

BURNERS, BATCHES, BATCH = 4, 12, 5  # 240 events, each burning 1 (rate 1, count)
GRANTERS, GRANTS = 3, 20
# Per account: what each grant gives. Short: 60 x 3.5 = 210 < 240; over: 60 x 4.25 = 255.
GRANT_AMOUNT = {"short": "3.5", "over": "4.25"}


@pytest.fixture
def two_ports(pg_deps: Deps) -> Iterator[list[int]]:
    with grpc_server(pg_deps) as first, grpc_server(pg_deps) as second:
        yield [first, second]


def burner(port: int, k: int, accounts: dict[str, str], errors: list[BaseException]) -> None:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = usage_stub(ch)
            for b in range(BATCHES):
                for name, acct in accounts.items():
                    chunk = [event(f"race-{name}-{k}-{b}-{i}", acct) for i in range(BATCH)]
                    got = stub.IngestEvents(
                        usage_pb2.IngestEventsRequest(events=chunk),
                        metadata=SERVICE_MD,
                        timeout=60,
                    ).results
                    assert [r.status for r in got] == [ACCEPTED] * BATCH
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


def granter(port: int, accounts: dict[str, str], errors: list[BaseException]) -> None:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            for _ in range(GRANTS):
                for name, acct in accounts.items():
                    grant(ch, acct, GRANT_AMOUNT[name])
    except BaseException as exc:
        errors.append(exc)


def test_concurrent_burns_and_grants_settle_overage_exactly(two_ports, pg_url) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(f"127.0.0.1:{two_ports[0]}") as ch:
        accounts = {name: account(ch, f"race-{name}") for name in GRANT_AMOUNT}
        burning_metric(ch, "race_calls", "1")
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=burner, args=(two_ports[k % 2], k, accounts, errors))
        for k in range(BURNERS)
    ] + [
        threading.Thread(target=granter, args=(two_ports[(k + 1) % 2], accounts, errors))
        for k in range(GRANTERS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads)
    assert errors == []

    burned = Decimal(BURNERS * BATCHES * BATCH)
    with grpc.insecure_channel(f"127.0.0.1:{two_ports[1]}") as ch:
        for name, acct in accounts.items():
            granted = amounts.mul(Decimal(GRANT_AMOUNT[name]), GRANTERS * GRANTS)
            left = max(amounts.sub(granted, burned), Decimal(0))
            owed = max(amounts.sub(burned, granted), Decimal(0))
            assert balance(ch, acct) == (amounts.fmt(left), amounts.fmt(owed)), name
    assert balance_and_overage_never_both_positive(pg_url, set(accounts.values())) > 0
    check_invariants_at(pg_url)


def balance_and_overage_never_both_positive(url: str, accounts: set[str]) -> int:
    """Walk each balance's ledger in order: after every change (a GRANT together with the
    OVERAGE_PAID that follows it) the balance and the overage are not both positive. Returns
    how many OVERAGE_PAID entries were seen."""
    engine = create_engine(normalize_url(url))
    try:
        with Session(engine) as s:
            by_account: dict[str, list[CreditLedgerEntry]] = defaultdict(list)
            for e in s.scalars(
                select(CreditLedgerEntry)
                .where(CreditLedgerEntry.billing_account_id.in_(accounts))
                .order_by(CreditLedgerEntry.seq)
            ):
                by_account[e.billing_account_id].append(e)
    finally:
        engine.dispose()
    paid = 0
    for rows in by_account.values():
        owed = Decimal(0)
        for i, e in enumerate(rows):
            owed = amounts.add(owed, e.overage)
            paid += e.kind == "overage_paid"
            if i + 1 < len(rows) and rows[i + 1].kind == "overage_paid":
                continue  # a grant, then what it paid back: one change
            assert not (e.balance_after > 0 and owed > 0), (e.billing_account_id, e.seq)
    return paid
