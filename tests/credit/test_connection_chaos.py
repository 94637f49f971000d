"""Every PostgreSQL connection of the server terminated again and again while clients debit,
grant and ingest usage at once (real concurrent gRPC clients, pg_terminate_backend of every
other backend of the test's database every 100 ms): every failed call answers UNAVAILABLE
SERVICE_UNAVAILABLE (never INTERNAL, never a 4xx), each client's retry with the same
request_id (events: the same unique ids) eventually succeeds once the kills stop, and the
ledger holds every debit and grant exactly once and every event is stored and burned once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from typing import Any

import grpc
import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing.v1 import credit_pb2, usage_pb2
from tests.conftest import SERVICE_MD
from tests.credit.lost_connection import Served, served_with_pids
from tests.credit.support import account, balance, check_invariants, grant, rid, stub
from tests.helpers import error_reason
from tests.usage.burn_support import burning_metric
from tests.usage.support import ACCEPTED, DUPLICATE, event, usage_stub
from tollbooth.db.models import CreditLedgerEntry, UsageEvent

pytestmark = pytest.mark.postgres

CLIENTS = 6
CALLS = 8


@pytest.fixture
def served(pg_url: str) -> Iterator[Served]:
    with served_with_pids(pg_url) as it:
        yield it


def _until_answered(call: Callable[[], Any], seen: Counter[str], stop: float) -> Any:
    while True:
        try:
            return call()
        except grpc.RpcError as err:
            seen[f"{err.code().name} {error_reason(err)}"] += 1
            assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
            assert time.monotonic() < stop, seen
            time.sleep(0.01)


def test_connections_killed_over_and_over_under_load_leave_every_write_once(
    served: Served,
) -> None:
    channel, deps, _pids, url = served
    _, acct, _ = account(channel)
    grant(channel, acct, "1000")
    burning_metric(channel, f"m{uuid.uuid4().hex[:8]}", "1")
    seen: Counter[str] = Counter()
    debits: list[credit_pb2.DebitCreditsRequest] = []
    grants: list[str] = []
    events: list[usage_pb2.UsageEvent] = []
    lock = threading.Lock()
    killing = threading.Event()
    killing.set()
    stop = time.monotonic() + 25

    def killer() -> None:
        with psycopg.connect(url, autocommit=True) as admin:
            while killing.is_set():
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                time.sleep(0.1)

    def debit(request: credit_pb2.DebitCreditsRequest) -> Any:
        return stub(channel).DebitCredits(request, metadata=SERVICE_MD, timeout=10)

    def ingest(batch: list[usage_pb2.UsageEvent]) -> list[int]:
        reply = usage_stub(channel).IngestEvents(
            usage_pb2.IngestEventsRequest(events=batch), metadata=SERVICE_MD, timeout=10
        )
        return [r.status for r in reply.results]

    def client(n: int) -> None:
        local: Counter[str] = Counter()
        for i in range(CALLS):
            request = credit_pb2.DebitCreditsRequest(
                account=acct, credit_type="units", amount=f"1.{n}{i}", request_id=rid()
            )
            _until_answered(partial(debit, request), local, stop)
            key = rid()
            _until_answered(partial(grant, channel, acct, f"2.{n}{i}", request_id=key), local, stop)
            batch = [event(f"chaos-{n}-{i}-{j}-{uuid.uuid4().hex[:6]}", acct) for j in range(3)]
            statuses = _until_answered(partial(ingest, batch), local, stop)
            assert set(statuses) <= {ACCEPTED, DUPLICATE}, statuses
            with lock:
                debits.append(request)
                grants.append(key)
                events.extend(batch)
        with lock:
            seen.update(local)

    kill = threading.Thread(target=killer)
    kill.start()
    workers = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for w in workers:
        w.start()
    time.sleep(3)  # the kills go on for a while under the load
    killing.clear()
    kill.join(timeout=30)
    for w in workers:
        w.join(timeout=60)
        assert not w.is_alive()
    assert len(debits) == CLIENTS * CALLS  # every client finished: each call answered
    assert set(seen) <= {"UNAVAILABLE SERVICE_UNAVAILABLE"}, seen
    # The pool pings only connections idle for over a second (db.PING_IDLE_SEC): one the last
    # kill ended moments ago would fail the check below, not the server. Counted afresh.
    deps.db.engine.dispose()
    with Session(deps.db.engine) as s:
        for request in debits:
            assert (
                s.execute(
                    select(func.count())
                    .select_from(CreditLedgerEntry)
                    .where(CreditLedgerEntry.request_id == request.request_id)
                ).scalar_one()
                == 1
            )
        for key in grants:
            assert (
                s.execute(
                    select(func.count())
                    .select_from(CreditLedgerEntry)
                    .where(CreditLedgerEntry.request_id == key)
                ).scalar_one()
                == 1
            )
        stored = s.execute(
            select(func.count())
            .select_from(UsageEvent)
            .where(UsageEvent.billing_account_id == acct)
        ).scalar_one()
        assert stored == len(events)
        check_invariants(s, acct)
    spent = sum(Decimal(r.amount) for r in debits) + len(events)
    granted = Decimal("1000") + sum(
        Decimal(f"2.{n}{i}") for n in range(CLIENTS) for i in range(CALLS)
    )
    assert Decimal(balance(channel, acct).balance) == granted - spent
