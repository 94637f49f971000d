"""What an account holds, in memory (tollbooth.subscriptions.holdings): kept per account and
process, and a change (a subscription created or canceled, a purchase) is seen by another
server process within the stated bound and by the writing process at once.

No timing assertions: the cross-process checks poll until the change is visible, with a
deadline of the bound plus slack, and assert that it became visible."""

from __future__ import annotations

import datetime as dt
import uuid

import grpc
import pytest
from sqlalchemy import update

from billing.v1 import checkout_pb2, checkout_pb2_grpc, entitlement_pb2, entitlement_pb2_grpc
from tests.catalog.test_snapshot import SLACK_SEC, SVC, poll, replica
from tollbooth.db import Database
from tollbooth.db.models import BillingAccount, Price, Product, Purchase, Subscription
from tollbooth.db.types import utcnow
from tollbooth.subscriptions import holdings, repository
from tollbooth.subscriptions.holdings import BOUND_SEC, Holdings


def _seed(db: Database, account: str = "") -> tuple[str, str, str]:
    """An account (unless given), a product `prod_<tag>` with a one-time price granting `gold`
    and a recurring price granting `silver`."""
    tag = uuid.uuid4().hex[:10]
    product = f"prod_{tag}"
    once, monthly = f"price_once_{tag}", f"price_month_{tag}"
    with db.transaction() as session:
        if not account:
            account = f"acct_{tag}"
            session.add(BillingAccount(id=account, principal_id=f"user-{tag}"))
        session.add(Product(id=product, name="Holdings", position=1, seq=1))
        session.flush()
        session.add_all(
            [
                Price(
                    id=once,
                    product_id=product,
                    currency="usd",
                    unit_amount=500,
                    type="one_time",
                    position=1,
                    seq=1,
                    entitlements=[{"feature": "gold", "value": "yes"}],
                ),
                Price(
                    id=monthly,
                    product_id=product,
                    currency="usd",
                    unit_amount=900,
                    type="recurring",
                    interval="month",
                    interval_count=1,
                    lookup_key=f"monthly-{tag}",
                    position=2,
                    seq=2,
                    entitlements=[{"feature": "silver", "value": "on"}],
                ),
            ]
        )
    return account, once, monthly


def _purchase(session, account: str, price_id: str) -> None:  # type: ignore[no-untyped-def]
    tag = uuid.uuid4().hex[:10]
    session.add(
        Purchase(
            id=f"pur_{tag}",
            billing_account_id=account,
            line=0,
            price_id=price_id,
            quantity=1,
            amount_total=500,
            currency="usd",
        )
    )


def _subscribe(session, account: str, price_id: str) -> str:  # type: ignore[no-untyped-def]
    """An active subscription with one item, the way the provider's events write it (the row,
    then its items by statement)."""
    tag = uuid.uuid4().hex[:10]
    now = utcnow()
    sub = Subscription(
        id=f"sub_{tag}",
        billing_account_id=account,
        stripe_subscription_id=f"sub_stripe_{tag}",
        price_id=price_id,
        lookup_key="monthly",
        state="active",
        current_period_start=now - dt.timedelta(days=1),
        current_period_end=now + dt.timedelta(days=29),
    )
    session.add(sub)
    session.flush()
    repository.replace_items(
        session, sub, [{"price_id": price_id, "quantity": 1, "stackable": False}]
    )
    return sub.id


def _cancel(session, sub_id: str) -> None:  # type: ignore[no-untyped-def]
    """By statement, as an operator's SQL would: only PostgreSQL's notification tells."""
    session.execute(update(Subscription).where(Subscription.id == sub_id).values(state="canceled"))


def _allowed(channel: grpc.Channel, account: str, feature: str) -> bool:
    stub = entitlement_pb2_grpc.EntitlementServiceStub(channel)
    request = entitlement_pb2.CheckEntitlementRequest(account=account, feature=feature)
    return stub.CheckEntitlement(request, metadata=SVC, timeout=10).allowed


def _plan(channel: grpc.Channel, account: str) -> str:
    stub = checkout_pb2_grpc.CheckoutServiceStub(channel)
    request = checkout_pb2.GetBillingStatusRequest(account=account)
    return stub.GetBillingStatus(request, metadata=SVC, timeout=10).plan


def _kept(kept: Holdings, account: str) -> bool:
    return kept.cached(account) is not None


def _warm(kept: Holdings, db: Database, account: str) -> bool:
    """Read (which keeps the answer once the listener vouches), then: is it kept?"""
    _features(kept, db, account)
    return _kept(kept, account)


def _features(kept: Holdings, db: Database, account: str) -> set[str]:
    with db.transaction(readonly=True) as session:
        held = kept.get(session, account, utcnow())
    return {e["feature"] for row in held.held for e in row.price_entitlements}


@pytest.mark.postgres
def test_a_change_is_served_by_another_process_within_the_bound_and_by_the_writer_at_once(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(pg_url)
    kept = holdings.of(db)
    # The writer ignores PostgreSQL's notifications here: what it sees at once is its own
    # commit's doing (a notification could otherwise win the race).
    monkeypatch.setattr(kept, "_on_notify", lambda notify: None)
    try:
        account, once, monthly = _seed(db)
        with replica(pg_url) as reader:
            # Warm: the reader keeps what the account holds (nothing) after its first answers.
            assert poll(lambda: not _allowed(reader, account, "gold"), BOUND_SEC + SLACK_SEC)
            assert _plan(reader, account) == "free"
            assert not _allowed(reader, account, "silver")
            # The writer's own memory is warm too.
            assert _features(kept, db, account) == set()
            assert poll(lambda: _warm(kept, db, account), BOUND_SEC + SLACK_SEC)

            with db.transaction() as session:  # a purchase
                _purchase(session, account, once)
            assert _features(kept, db, account) == {"gold"}  # the writer: at once, no wait
            assert poll(lambda: _allowed(reader, account, "gold"), BOUND_SEC + SLACK_SEC)

            assert poll(lambda: _warm(kept, db, account), BOUND_SEC + SLACK_SEC)
            with db.transaction() as session:  # a subscription created
                sub_id = _subscribe(session, account, monthly)
            assert _features(kept, db, account) == {"gold", "silver"}
            assert poll(lambda: _allowed(reader, account, "silver"), BOUND_SEC + SLACK_SEC)
            assert poll(lambda: _plan(reader, account) != "free", BOUND_SEC + SLACK_SEC)

            assert poll(lambda: _warm(kept, db, account), BOUND_SEC + SLACK_SEC)
            with db.transaction() as session:  # canceled, by a statement the ORM never sees
                repository.note_change(session, account)
                _cancel(session, sub_id)
            assert _features(kept, db, account) == {"gold"}
            assert poll(lambda: not _allowed(reader, account, "silver"), BOUND_SEC + SLACK_SEC)
            assert poll(lambda: _plan(reader, account) == "free", BOUND_SEC + SLACK_SEC)
            assert _allowed(reader, account, "gold")
    finally:
        db.dispose()


@pytest.mark.postgres
def test_a_change_heard_from_another_process_drops_the_account_and_no_listener_no_memory(
    pg_url: str,
) -> None:
    db, other = Database(pg_url), Database(pg_url)
    kept = Holdings(db)
    try:
        account, once, _ = _seed(other)
        assert _features(kept, db, account) == set()
        assert poll(lambda: _warm(kept, db, account), BOUND_SEC + SLACK_SEC)
        assert kept.cached(account) is not None  # kept: answered from memory from now on
        with other.transaction() as session:  # another process's write: only NOTIFY tells
            _purchase(session, account, once)
        assert poll(lambda: not _kept(kept, account), BOUND_SEC + SLACK_SEC)
        assert _features(kept, db, account) == {"gold"}
        # as_of: a fresh read's own time, and never later than the answer.
        held = kept.cached(account)
        assert held is None or held.as_of <= utcnow()
        kept.close()  # the listener stops: nothing kept can be vouched for
        assert poll(lambda: not _kept(kept, account), BOUND_SEC + SLACK_SEC)
    finally:
        kept.close()
        db.dispose()
        other.dispose()


def test_sqlite_keeps_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tollbooth.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'billing.db'}"
    upgrade(url)
    db = Database(url)
    try:
        account, once, _ = _seed(db)
        kept = holdings.of(db)
        assert _features(kept, db, account) == set()
        assert kept.cached(account) is None
        with db.transaction() as session:
            _purchase(session, account, once)
        assert _features(kept, db, account) == {"gold"}
    finally:
        db.dispose()


@pytest.mark.postgres
def test_warm_calls_read_no_holdings_from_the_database(pg_url: str) -> None:
    """Once kept, CheckEntitlement (boolean), GetBillingStatus and ListPrices' hints answer
    from memory: no statement reads subscriptions or purchases (and their answers follow a
    change: the first test)."""
    from sqlalchemy import event

    from billing.v1 import catalog_pb2, catalog_pb2_grpc, token_pb2, token_pb2_grpc
    from tests.checkout.support import SCOPES
    from tests.conftest import make_env
    from tests.devstack import serving
    from tollbooth.app import Deps
    from tollbooth.config import Settings

    db = Database(pg_url)
    reads: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if "subscriptions" in statement or "purchases" in statement:
            reads.append(statement)

    try:
        with serving(Deps.build(Settings.from_env(make_env(pg_url)), db)) as channel:
            reply = token_pb2_grpc.TokenServiceStub(channel).IssueToken(
                token_pb2.IssueTokenRequest(
                    principal_id=f"user-{uuid.uuid4().hex[:8]}", scopes=SCOPES
                ),
                metadata=SVC,
                timeout=10,
            )
            account, bearer = (
                reply.billing_account_id,
                (("authorization", f"Bearer {reply.access_token}"),),
            )
            _, once, monthly = _seed(db, account)
            with db.transaction() as session:
                _purchase(session, account, once)
                _subscribe(session, account, monthly)
            prices = catalog_pb2_grpc.CatalogServiceStub(channel)
            product = "prod_" + once.rsplit("_", 1)[1]

            def calls() -> None:
                assert _allowed(channel, account, "gold") and _allowed(channel, account, "silver")
                assert _plan(channel, account) == "monthly"
                stub = checkout_pb2_grpc.CheckoutServiceStub(channel)
                status = stub.GetBillingStatus(
                    checkout_pb2.GetBillingStatusRequest(), metadata=bearer, timeout=10
                )
                assert status.billing_account_id == account
                hints = prices.ListPrices(
                    catalog_pb2.ListPricesRequest(product_id=product), metadata=bearer, timeout=10
                )
                assert [p.hint for p in hints.prices] == [
                    catalog_pb2.PURCHASE_HINT_CURRENT,
                    catalog_pb2.PURCHASE_HINT_CURRENT,
                ]

            event.listen(db.engine, "before_cursor_execute", seen)

            def warm() -> bool:
                reads.clear()
                calls()
                return not reads

            assert poll(warm, BOUND_SEC + SLACK_SEC), reads
            for _ in range(3):
                assert warm(), reads
    finally:
        db.dispose()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3])


def test_the_psycopg_floor_keeps_notifications_received_during_the_heartbeat() -> None:
    """The listeners (holdings, catalog) run `SELECT 1` between runs of `notifies()`: a
    notification that arrives meanwhile is kept for the next run only by psycopg 3.2.4 and
    later (psycopg #962). An older psycopg, which `>=3.2` admitted, drops it: that change is
    never heard and the account's entry is kept until some other change."""
    import re
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if d.startswith("psycopg")]
    floor = re.search(r">=\s*([0-9.]+)", spec)
    assert floor is not None, spec
    assert _version(floor.group(1)) >= (3, 2, 4), spec
    assert _version(version("psycopg")) >= (3, 2, 4)


@pytest.mark.postgres
def test_a_notification_received_during_the_heartbeat_is_heard(pg_url: str) -> None:
    """What the listeners rely on: a notification that reaches the connection while it runs
    the heartbeat's `SELECT 1` is returned by the next `notifies()`."""
    import psycopg

    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    channel = f"tollbooth_probe_{uuid.uuid4().hex[:8]}"
    with (
        psycopg.connect(dsn, autocommit=True) as listener,
        psycopg.connect(dsn, autocommit=True) as sender,
    ):
        listener.execute(f"LISTEN {channel}")
        sender.execute(f"NOTIFY {channel}, 'acct_x'")
        listener.execute("SELECT pg_sleep(0.05)")  # the notification arrives with this reply
        heard = [n.payload for n in listener.notifies(timeout=0)]
    assert heard == ["acct_x"]
