"""A warm CheckEntitlement (account known, holdings kept, metric definitions kept): a metered
or credit-backed answer is one statement on a plain pooled connection (no BEGIN, no COMMIT,
no session), a boolean one none; the metric definitions (tollbooth.usage.known_metrics) follow
a change committed anywhere within the stated bound, and the writer's at once; a metered
answer still counts every event committed before the call.

Statements and round trips are counted on the wire: libpq's trace of every connection the
server checks out (as tests/credit/test_onetrip.py counts them); sessions by the ORM's
`after_begin` event. No timing assertions: cross-process checks poll
until the change is visible, with a deadline of the bound plus slack."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import update

from billing.v1 import entitlement_pb2, entitlement_pb2_grpc, usage_pb2, usage_pb2_grpc
from tests.catalog.test_snapshot import SLACK_SEC, SVC, poll, replica
from tests.credit.support import grant, make_due
from tests.credit.wire import Recorder, serve_recorded
from tests.entitlements.test_holdings import _subscribe
from tollbooth.db import Database
from tollbooth.db.models import BillableMetric, BillingAccount, Price, Product
from tollbooth.subscriptions import holdings
from tollbooth.usage import known_metrics, repository
from tollbooth.usage.known_metrics import BOUND_SEC, KnownMetrics

DEADLINE = BOUND_SEC + SLACK_SEC


def _seed(db: Database) -> tuple[str, str, str]:
    """An account subscribed to a price granting `pro` (boolean), `calls` (metered: metric
    `calls_<tag>`, a count of `api.call.<tag>`, limit 10) and `ai` (credit-backed: 2 `units`).
    Returns (account, metric code, event name)."""
    tag = uuid.uuid4().hex[:10]
    account, code, name = f"acct_{tag}", f"calls_{tag}", f"api.call.{tag}"
    with db.transaction() as session:
        session.add(BillingAccount(id=account, principal_id=f"user-{tag}"))
        session.add(BillableMetric(code=code, name=code, event_name=name, aggregation="count"))
        session.add(Product(id=f"prod_{tag}", name="Warm", position=1, seq=1))
        session.flush()
        session.add(
            Price(
                id=f"price_{tag}",
                product_id=f"prod_{tag}",
                currency="usd",
                unit_amount=900,
                type="recurring",
                interval="month",
                interval_count=1,
                lookup_key=f"warm-{tag}",
                position=1,
                seq=1,
                entitlements=[
                    {"feature": "pro", "value": "yes"},
                    {"feature": "calls", "metric": code, "limit": "10"},
                    {"feature": "ai", "credit_type": "units", "amount": "2"},
                ],
            )
        )
    with db.transaction() as session:
        _subscribe(session, account, f"price_{tag}")
    return account, code, name


def _ingest(channel: grpc.Channel, account: str, name: str, count: int, **props: Any) -> None:
    """`count` events now; acknowledged, so committed, when this returns."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(dt.datetime.now(dt.UTC))
    events = []
    for _ in range(count):
        event_ = usage_pb2.UsageEvent(
            unique_id=uuid.uuid4().hex, account=account, event_name=name, event_time=stamp
        )
        for key, value in props.items():
            event_.properties[key] = value
        events.append(event_)
    reply = usage_pb2_grpc.UsageServiceStub(channel).IngestEvents(
        usage_pb2.IngestEventsRequest(events=events), metadata=SVC, timeout=30
    )
    assert {r.status for r in reply.results} == {usage_pb2.EVENT_STATUS_ACCEPTED}


def _check(channel: grpc.Channel, account: str, feature: str) -> entitlement_pb2.EntitlementCheck:
    stub = entitlement_pb2_grpc.EntitlementServiceStub(channel)
    request = entitlement_pb2.CheckEntitlementRequest(account=account, feature=feature)
    return stub.CheckEntitlement(request, metadata=SVC, timeout=10)


@pytest.fixture
def served(pg_url: str) -> Iterator[tuple[grpc.Channel, Database, Recorder]]:
    yield from serve_recorded(pg_url)


def _warm_up(channel: grpc.Channel, db: Database, account: str) -> None:
    """First calls resolve the account and read its holdings; wait until both listeners
    vouch, so what was read is kept."""
    kept, metrics = holdings.of(db), known_metrics.of(db)

    def warm() -> bool:
        _check(channel, account, "calls")
        return kept.cached(account) is not None and metrics.get() is not None

    assert poll(warm, DEADLINE)


@pytest.mark.postgres
def test_a_warm_metered_or_credit_check_is_one_statement_and_a_boolean_none(served) -> None:  # type: ignore[no-untyped-def]
    channel, db, rec = served
    account, _, name = _seed(db)
    _ingest(channel, account, name, 3)
    grant(channel, account, "5")
    _warm_up(channel, db, account)

    for _ in range(3):
        got, statements, trips = rec.call(lambda: _check(channel, account, "calls"))
        assert (got.allowed, got.used, got.remaining, got.limit) == (True, "3", "7", "10")
        assert len(statements) == 1, statements
        assert "usage_events" in statements[0], statements
        assert trips == 1, statements  # the aggregate alone: no BEGIN, COMMIT or metric read
        assert rec.sessions == 0  # a plain connection: no ORM session

        got, statements, trips = rec.call(lambda: _check(channel, account, "ai"))
        assert (got.allowed, got.balance, got.amount) == (True, "5", "2")
        assert len(statements) == 1, statements
        assert "credit_balances" in statements[0], statements
        assert trips == 1, statements
        assert rec.sessions == 0

        got, statements, trips = rec.call(lambda: _check(channel, account, "pro"))
        assert got.allowed and got.value == "yes"
        assert (statements, trips) == ([], 0)

        got, statements, trips = rec.call(lambda: _check(channel, account, "absent"))
        assert not got.allowed
        assert (statements, trips) == ([], 0)


@pytest.mark.postgres
def test_a_warm_metered_answer_counts_every_event_committed_before_the_call(served) -> None:  # type: ignore[no-untyped-def]
    channel, db, rec = served
    account, _, name = _seed(db)
    _warm_up(channel, db, account)
    assert _check(channel, account, "calls").used == "0"
    for n in range(1, 12):
        _ingest(channel, account, name, 1)  # committed when acknowledged
        got, statements, _ = rec.call(lambda: _check(channel, account, "calls"))
        assert got.used == str(n)
        assert got.remaining == str(max(10 - n, 0))
        assert got.allowed is (n < 10)
        assert len(statements) == 1 and rec.sessions == 0, statements  # still the warm path


@pytest.mark.postgres
def test_a_due_expiry_falls_back_to_the_session_path(served) -> None:  # type: ignore[no-untyped-def]
    """The stored balance is not exact once an expiry is due: the transaction path computes
    it (the grant that expired no longer counts)."""
    channel, db, rec = served
    account, _, _ = _seed(db)
    grant(channel, account, "3")
    later = timestamp_pb2.Timestamp()
    later.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    expiring = grant(channel, account, "4", expire_time=later)
    _warm_up(channel, db, account)
    assert _check(channel, account, "ai").balance == "7"
    make_due(db, account, expiring.grant_id)  # the expiry is due, not yet recorded
    got, statements, _ = rec.call(lambda: _check(channel, account, "ai"))
    assert (got.allowed, got.balance) == (True, "3")
    assert len(statements) > 1 and rec.sessions == 1, statements


def _set(db: Database, code: str, **values: Any) -> None:
    with db.transaction() as session:  # by statement, as an operator's SQL would
        session.execute(update(BillableMetric).where(BillableMetric.code == code).values(**values))


@pytest.mark.postgres
def test_a_metric_change_is_served_by_another_process_within_the_bound(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        account, code, name = _seed(db)
        with replica(pg_url) as reader:
            _ingest(reader, account, name, 3, n=4)
            assert poll(lambda: _check(reader, account, "calls").used == "3", DEADLINE)
            # Warm (kept in the reader's memory): answers are served from there meanwhile.
            assert _check(reader, account, "calls").used == "3"

            _set(db, code, aggregation="sum", property="n")
            assert poll(lambda: _check(reader, account, "calls").used == "12", DEADLINE)
            got = _check(reader, account, "calls")
            assert (got.allowed, got.remaining) == (False, "0")

            with db.transaction() as session:  # deleted: nothing can be counted
                assert repository.delete_metric(session, code)
            assert poll(lambda: _check(reader, account, "calls").used == "", DEADLINE)
            assert not _check(reader, account, "calls").allowed

            with db.transaction() as session:  # created again: its events count again
                session.add(
                    BillableMetric(code=code, name=code, event_name=name, aggregation="count")
                )
            assert poll(lambda: _check(reader, account, "calls").used == "3", DEADLINE)
            assert _check(reader, account, "calls").allowed
    finally:
        db.dispose()


@pytest.mark.postgres
def test_the_writer_sees_its_own_metric_change_at_once_and_no_listener_no_memory(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(pg_url)
    metrics = known_metrics.of(db)
    # Deaf to PostgreSQL: what the writer sees at once is its own commit's doing.
    monkeypatch.setattr(metrics, "_on_notify", lambda notify: None)
    try:
        _, code, _ = _seed(db)
        assert poll(lambda: metrics.get() is not None, DEADLINE)
        known = metrics.get()
        assert known is not None and known.specs[code].aggregation == "count"

        with db.transaction() as session:  # through the ORM
            row = session.get(BillableMetric, code)
            assert row is not None
            row.aggregation, row.property = "max", "n"
        known = metrics.get()
        assert known is not None and known.specs[code].aggregation == "max"

        with db.transaction() as session:  # by the repository's statement
            assert repository.delete_metric(session, code)
        known = metrics.get()
        assert known is not None and code not in known.specs

        with pytest.raises(RuntimeError), db.transaction() as session:  # rolled back
            repository.insert_metric(
                session,
                {"code": code, "name": code, "event_name": "x", "aggregation": "count"},
            )
            raise RuntimeError("rolled back")
        known = metrics.get()
        assert known is not None and code not in known.specs
    finally:
        db.dispose()


@pytest.mark.postgres
def test_definitions_heard_from_another_process_and_none_without_the_listener(
    pg_url: str,
) -> None:
    db, other = Database(pg_url), Database(pg_url)
    metrics = KnownMetrics(db)
    try:
        _, code, _ = _seed(other)
        assert poll(lambda: metrics.get() is not None, DEADLINE)
        _set(other, code, aggregation="count_unique", property="user")
        assert poll(
            lambda: (
                (k := metrics.get()) is not None
                and code in k.specs
                and k.specs[code].aggregation == "count_unique"
            ),
            DEADLINE,
        )
        known = metrics.get()
        assert known is not None and known.as_of <= dt.datetime.now(dt.UTC)
        metrics.close()  # the listener stops: nothing kept can be vouched for
        assert poll(lambda: metrics.get() is None, DEADLINE)
    finally:
        metrics.close()
        db.dispose()
        other.dispose()


def test_sqlite_keeps_no_metrics(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tollbooth.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'billing.db'}"
    upgrade(url)
    db = Database(url)
    try:
        _seed(db)
        assert known_metrics.of(db).get() is None
    finally:
        db.dispose()
