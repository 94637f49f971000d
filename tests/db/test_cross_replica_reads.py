"""Read-your-writes across two `serve-grpc` replicas on one PostgreSQL: a write answered by
replica A, then at once a read on replica B (real gRPC channels pinned to each).

What B must answer (README "Catalog", "Entitlements"): what is read from the database
(balances, prices by id, usage totals, accounts) shows the write at once; so do the catalog
listings and the billing status, which answer from memory only when it was loaded at the
current versions (one statement per call, migration 0036); what a replica keeps otherwise (the
metric definitions, the holdings behind CheckEntitlement and ListEntitlements) is served by
every replica at most 1 s after its commit, and an answer carrying `as_of_time` holds every
change committed before it. So each read is checked at once (`as_of_time` at or after the write's
answer means the write must be in it) and then within the bound (polled, no timing asserted).
ROUNDS pairs per test; BILLING_SOAK=1 runs many more.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import text

from billing.v1 import (
    account_pb2,
    account_pb2_grpc,
    catalog_pb2,
    checkout_pb2,
    checkout_pb2_grpc,
    entitlement_pb2,
    entitlement_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
)
from tests.catalog.support import SLACK_SEC, poll
from tests.catalog.support import call as catalog_call
from tests.catalog.support import price as create_price
from tests.catalog.support import product as create_product
from tests.conftest import SERVICE_MD, make_env
from tests.credit.support import account as new_account
from tests.credit.support import balance, debit, grant
from tests.entitlements.test_holdings import _purchase
from tests.entitlements.test_holdings import _seed as seed_holdings
from tests.entitlements.test_warm import _check, _ingest
from tests.entitlements.test_warm import _seed as seed_metered
from tests.helpers import error_reason
from tollbooth.db import Database
from tollbooth.db.listen import APPLICATION, BOUND_SEC

pytestmark = pytest.mark.postgres

ROUNDS = 400 if os.environ.get("BILLING_SOAK") == "1" else 40
CLIENTS = 4
DEADLINE = BOUND_SEC + SLACK_SEC


@pytest.fixture(scope="module")
def db(pg_shared_url: str) -> Iterator[Database]:
    database = Database(pg_shared_url)
    yield database
    database.dispose()


def _when(stamp) -> dt.datetime:  # type: ignore[no-untyped-def]
    return stamp.ToDatetime(tzinfo=dt.UTC)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def concurrently(n: int, work: Callable[[int], None]) -> None:
    """`work(i)` for i in 0..n-1, each on its own thread (a client of its own); re-raises."""
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]


# -- read from the database: at once --------------------------------------------------------


def test_a_grant_or_debit_on_one_replica_is_in_the_next_balance_on_the_other(
    replica_channels: list[grpc.Channel],
) -> None:
    a, b = replica_channels

    def client(i: int) -> None:
        write, read = (a, b) if i % 2 == 0 else (b, a)
        principal, _, _ = new_account(write)
        expected = 0
        for n in range(ROUNDS):
            if n % 3 == 2:
                debit(write, principal, "1")
                expected -= 1
            else:
                grant(write, principal, "2")
                expected += 2
            got = balance(read, principal)
            assert got.balance == str(expected), (n, got)

    concurrently(CLIENTS, client)


def test_usage_ingested_on_one_replica_is_counted_by_a_metered_check_on_the_other(
    replica_channels: list[grpc.Channel], db: Database
) -> None:
    a, b = replica_channels
    account, _, name = seed_metered(db)
    assert poll(lambda account=account: _check(b, account, "calls").metric != "", DEADLINE)
    sent = 0
    for n in range(ROUNDS):
        write, read = (a, b) if n % 2 == 0 else (b, a)
        _ingest(write, account, name, 1)
        sent += 1
        answer = _check(read, account, "calls")
        assert answer.used == str(sent), (n, answer)


def test_an_archive_on_one_replica_is_refused_at_once_by_the_other(
    replica_channels: list[grpc.Channel],
) -> None:
    a, b = replica_channels
    for n in range(ROUNDS // 4):
        write, read = (a, b) if n % 2 == 0 else (b, a)
        principal, _, _ = new_account(read)  # the reader knows the account (kept refs)
        grant(read, principal, "1")
        account_pb2_grpc.AccountServiceStub(write).ArchiveAccount(
            account_pb2.ArchiveAccountRequest(account=principal, request_id=uuid.uuid4().hex),
            metadata=SERVICE_MD,
            timeout=10,
        )
        with pytest.raises(grpc.RpcError) as refused:
            token_pb2_grpc.TokenServiceStub(read).IssueToken(
                token_pb2.IssueTokenRequest(principal_id=principal), metadata=SERVICE_MD, timeout=10
            )
        assert error_reason(refused.value) == "ACCOUNT_ARCHIVED"
        with pytest.raises(grpc.RpcError) as refused:
            grant(read, principal, "1")
        assert error_reason(refused.value) == "ACCOUNT_ARCHIVED"


def test_a_price_written_on_one_replica_is_got_by_id_at_once_on_the_other(
    replica_channels: list[grpc.Channel],
) -> None:
    a, b = replica_channels
    owner = create_product(a, f"Cross {uuid.uuid4().hex[:6]}").product_id
    for n in range(ROUNDS // 2):
        write, read = (a, b) if n % 2 == 0 else (b, a)
        made = create_price(write, owner, unit_amount=100 + n, nickname=f"n{n}")
        got = catalog_call(read, "GetPrice", catalog_pb2.GetPriceRequest(price_id=made.price_id))
        assert got.unit_amount == 100 + n


def test_an_endpoint_disabled_or_deleted_on_one_replica_is_so_at_once_on_the_other(
    replica_channels: list[grpc.Channel],
) -> None:
    from google.protobuf import timestamp_pb2

    from billing.v1 import notification_pb2 as pb
    from billing.v1 import notification_pb2_grpc
    from tests.helpers import keyed

    a, b = replica_channels
    since = timestamp_pb2.Timestamp()
    since.FromDatetime(_now() - dt.timedelta(hours=1))
    for n in range(ROUNDS // 8):
        write, read = (notification_pb2_grpc.NotificationServiceStub(ch) for ch in (a, b))
        if n % 2:
            write, read = read, write
        eid = write.CreateNotificationEndpoint(
            keyed(
                pb.CreateNotificationEndpointRequest(
                    endpoint=pb.NotificationEndpoint(url="http://127.0.0.1:9/hooks")
                )
            ),
            metadata=SERVICE_MD,
        ).endpoint.endpoint_id
        got = read.GetNotificationEndpoint(
            pb.GetNotificationEndpointRequest(endpoint_id=eid), metadata=SERVICE_MD
        )
        assert got.enabled
        write.DisableNotificationEndpoint(
            keyed(pb.DisableNotificationEndpointRequest(endpoint_id=eid)), metadata=SERVICE_MD
        )
        got = read.GetNotificationEndpoint(
            pb.GetNotificationEndpointRequest(endpoint_id=eid), metadata=SERVICE_MD
        )
        assert not got.enabled, n
        write.DeleteNotificationEndpoint(
            keyed(pb.DeleteNotificationEndpointRequest(endpoint_id=eid)), metadata=SERVICE_MD
        )
        with pytest.raises(grpc.RpcError) as gone:
            read.ResendNotificationsSince(
                keyed(pb.ResendNotificationsSinceRequest(endpoint_id=eid, since=since)),
                metadata=SERVICE_MD,
            )
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND, n


# -- kept in memory: the answer's as_of_time tells, and the bound holds -----------------------


def test_a_purchase_is_checked_on_another_replica_as_of_its_answer_and_within_the_bound(
    replica_channels: list[grpc.Channel], db: Database
) -> None:
    """Holdings written by another process (as the webhook's replica writes them): each
    CheckEntitlement and ListEntitlements on either replica right after the commit either
    holds the purchase or says (as_of_time) that it predates it; within the bound all do."""
    a, b = replica_channels
    stale = 0
    for n in range(ROUNDS // 4):
        account, once, _ = seed_holdings(db)
        for ch in (a, b):  # both keep the account's (empty) holdings
            assert poll(
                lambda ch=ch, account=account: not _check(ch, account, "gold").allowed, DEADLINE
            )
        with db.transaction() as session:
            _purchase(session, account, once)
        committed = _now()
        for ch in (b, a):
            answer = _check(ch, account, "gold")
            assert answer.allowed or _when(answer.as_of_time) < committed, (n, answer)
            listed = entitlement_pb2_grpc.EntitlementServiceStub(ch).ListEntitlements(
                entitlement_pb2.ListEntitlementsRequest(account=account),
                metadata=SERVICE_MD,
                timeout=10,
            )
            features = {e.feature for e in listed.entitlements}
            assert "gold" in features or _when(listed.as_of_time) < committed, (n, listed)
            stale += not answer.allowed
        for ch in (a, b):
            assert poll(
                lambda ch=ch, account=account: _check(ch, account, "gold").allowed, DEADLINE
            )
    print(f"answers that predated the purchase (as_of_time said so): {stale}")


def _plan(channel: grpc.Channel, account: str) -> checkout_pb2.BillingStatus:
    return checkout_pb2_grpc.CheckoutServiceStub(channel).GetBillingStatus(
        checkout_pb2.GetBillingStatusRequest(account=account), metadata=SERVICE_MD, timeout=10
    )


def _features_of(status: checkout_pb2.BillingStatus) -> set[str]:
    return {e.feature for e in status.entitlements}


def test_a_purchase_is_in_the_billing_status_of_another_replica_within_the_bound(
    replica_channels: list[grpc.Channel], db: Database
) -> None:
    a, b = replica_channels
    for n in range(ROUNDS // 8):
        account, once, _ = seed_holdings(db)
        for ch in (a, b):
            assert poll(
                lambda ch=ch, account=account: "gold" not in _features_of(_plan(ch, account)),
                DEADLINE,
            )
        with db.transaction() as session:
            _purchase(session, account, once)
        for ch in (a, b):
            assert poll(
                lambda ch=ch, account=account: "gold" in _features_of(_plan(ch, account)), DEADLINE
            ), n


def _nicknames(channel: grpc.Channel, product_id: str) -> list[str]:
    reply = catalog_call(
        channel,
        "ListPrices",
        catalog_pb2.ListPricesRequest(product_id=product_id, include_inactive=True),
    )
    return sorted(p.nickname for p in reply.prices if p.active)


def test_a_price_written_on_one_replica_is_listed_by_the_other_within_the_bound(
    replica_channels: list[grpc.Channel],
) -> None:
    a, b = replica_channels
    owner = create_product(a, f"Listed {uuid.uuid4().hex[:6]}").product_id
    wanted: list[str] = []
    for n in range(ROUNDS // 8):
        write, read = (a, b) if n % 2 == 0 else (b, a)
        made = create_price(write, owner, nickname=f"n{n:03}")
        wanted = sorted([*wanted, f"n{n:03}"])
        assert _nicknames(write, owner) == wanted  # the writer: at once
        assert poll(lambda r=read, w=wanted: _nicknames(r, owner) == w, DEADLINE), n
        catalog_call(
            write,
            "ArchivePrice",
            catalog_pb2.ArchivePriceRequest(price_id=made.price_id, request_id=uuid.uuid4().hex),
        )
        wanted.remove(f"n{n:03}")
        assert _nicknames(write, owner) == wanted
        assert poll(lambda r=read, w=wanted: _nicknames(r, owner) == w, DEADLINE), n


# -- the listener's connection cut ----------------------------------------------------------


def _listeners(db: Database, action: str = "pid") -> int:
    """Every server process's LISTEN connection on this database (`action` of each pid)."""
    with db.transaction() as session:
        return len(
            session.execute(
                text(
                    f"SELECT {action} FROM pg_stat_activity "
                    "WHERE application_name LIKE :app AND datname = current_database()"
                ),
                {"app": f"{APPLICATION}:%"},
            ).all()
        )


def test_a_change_while_the_listeners_are_cut_is_served_within_the_bound(
    replica_channels: list[grpc.Channel], db: Database
) -> None:
    """The listeners' connections terminated, then a purchase: no replica serves the account's
    old holdings past the bound (the notification was lost; the reconnect drops everything),
    and every answer meanwhile is honest about its as_of_time."""
    a, b = replica_channels
    for n in range(3):
        account, once, _ = seed_holdings(db)
        # Both listening again (a cut one reconnects after a backoff), the account kept.
        assert poll(lambda: _listeners(db) >= 2, DEADLINE)
        for ch in (a, b):
            assert poll(
                lambda ch=ch, account=account: not _check(ch, account, "gold").allowed, DEADLINE
            )
        assert _listeners(db, "pg_terminate_backend(pid)") >= 2
        with db.transaction() as session:
            _purchase(session, account, once)
        committed = _now()
        for ch in (b, a):
            answer = _check(ch, account, "gold")
            assert answer.allowed or _when(answer.as_of_time) < committed, (n, answer)
        for ch in (a, b):
            assert poll(
                lambda ch=ch, account=account: _check(ch, account, "gold").allowed, DEADLINE
            ), n
            assert poll(
                lambda ch=ch, account=account: "gold" in _features_of(_plan(ch, account)), DEADLINE
            ), n


# -- a replica that hears late: what it answers meanwhile -----------------------------------


class LateListener:
    """Replica B in this process, its listener holding each notification heard while `held()`
    runs (as a busy process's listener thread hears late; never past the bound, so B keeps
    trusting its memory): what B answers between A's answer and B's hearing of it."""

    # With a beat (BOUND_SEC / 4) under BOUND_SEC: the listener stays alive, its memory in use.
    HOLD_SEC = 0.6

    def __init__(self, url: str) -> None:
        from tollbooth.app import Deps
        from tollbooth.config import Settings
        from tollbooth.db.listen import listener_of

        self.deps = Deps.build(Settings.from_env(make_env(url)))
        self.listener = listener_of(self.deps.db)
        self._gate = threading.Event()
        self._gate.set()
        self._deaf = False
        dispatch = self.listener._dispatch

        def late(notify: object) -> None:
            self._gate.wait(self.HOLD_SEC)
            if not self._deaf:
                dispatch(notify)

        self.listener._dispatch = late  # type: ignore[method-assign]

    def heard(self) -> bool:
        """Whether B has heard every change committed before now (its listener vouches past
        it): what it keeps from here on is dropped only by what comes next."""
        self.listener.start()  # started by a first read otherwise
        now = _now()
        return poll(lambda: self.listener.vouched > now, DEADLINE)

    def keeps(self, account: str) -> bool:
        from tollbooth.subscriptions import holdings

        return holdings.of(self.deps.db).cached(account) is not None

    @contextmanager
    def held(self) -> Iterator[None]:
        self._gate.clear()
        try:
            yield
        finally:
            self._gate.set()

    @contextmanager
    def deaf(self) -> Iterator[None]:
        """B's listener, alive, drops every notification (B keeps trusting its memory); then
        B forgets what it keeps, as a reconnect would (the other tests' B hears)."""
        from tollbooth.subscriptions import holdings
        from tollbooth.usage import known_metrics

        self._deaf = True
        try:
            yield
        finally:
            self._deaf = False
            holdings.of(self.deps.db).changed()
            known_metrics.of(self.deps.db).changed()


@pytest.fixture(scope="module")
def late(pg_shared_url: str) -> Iterator[tuple[grpc.Channel, grpc.Channel, LateListener]]:
    """(A: a `serve-grpc` replica, B: a late-hearing replica in this process, B's handle)."""
    from tests.devstack import grpc_replicas, serving

    replica_b = LateListener(pg_shared_url)
    try:
        with (
            grpc_replicas(make_env(pg_shared_url), count=1) as ports,
            grpc.insecure_channel(f"127.0.0.1:{ports[0]}") as a,
            serving(replica_b.deps) as b,
        ):
            grpc.channel_ready_future(a).result(timeout=30)
            yield a, b, replica_b
    finally:
        replica_b.deps.db.dispose()


def test_a_late_replica_answers_a_check_with_an_as_of_time_before_the_purchase(
    late: tuple[grpc.Channel, grpc.Channel, LateListener], db: Database
) -> None:
    """The contract that holds today: CheckEntitlement and ListEntitlements may be stale on the
    replica that has not heard yet, and then say so (as_of_time before the commit)."""
    _, b, replica_b = late
    for n in range(3):
        account, once, _ = seed_holdings(db)
        assert replica_b.heard()  # the seed's catalog change drops every account: before
        assert poll(lambda account=account: not _check(b, account, "gold").allowed, DEADLINE)
        assert poll(
            lambda account=account: _check(b, account, "gold") and replica_b.keeps(account),
            DEADLINE,
        )
        with replica_b.held():
            with db.transaction() as session:
                _purchase(session, account, once)
            committed = _now()
            answer = _check(b, account, "gold")
            assert answer.allowed or _when(answer.as_of_time) < committed, (n, answer)
        assert poll(lambda account=account: _check(b, account, "gold").allowed, DEADLINE)


def test_a_late_replica_answers_the_billing_status_with_the_purchase_or_says_how_old(
    late: tuple[grpc.Channel, grpc.Channel, LateListener], db: Database
) -> None:
    _, b, replica_b = late
    account, once, _ = seed_holdings(db)
    assert replica_b.heard()  # the seed's catalog change drops every account: before
    assert poll(lambda account=account: "gold" not in _features_of(_plan(b, account)), DEADLINE)
    assert poll(lambda account=account: _plan(b, account) and replica_b.keeps(account), DEADLINE)
    with replica_b.held():
        with db.transaction() as session:
            _purchase(session, account, once)
        committed = _now()
        status = _plan(b, account)
    as_of = status.as_of_time if "as_of_time" in status.DESCRIPTOR.fields_by_name else None  # type: ignore[attr-defined]
    assert "gold" in _features_of(status) or (as_of is not None and _when(as_of) < committed)


def test_a_late_replica_lists_a_price_created_on_the_other_or_says_how_old(
    late: tuple[grpc.Channel, grpc.Channel, LateListener],
) -> None:
    a, b, replica_b = late
    owner = create_product(a, f"Late {uuid.uuid4().hex[:6]}").product_id
    assert replica_b.heard()
    assert poll(lambda: _nicknames(b, owner) == [], DEADLINE)
    with replica_b.held():
        create_price(a, owner, nickname="new")
        committed = _now()
        reply = catalog_call(b, "ListPrices", catalog_pb2.ListPricesRequest(product_id=owner))
    fields = reply.DESCRIPTOR.fields_by_name
    as_of = reply.as_of_time if "as_of_time" in fields else None  # type: ignore[attr-defined]
    listed = [p.nickname for p in reply.prices]
    assert listed == ["new"] or (as_of is not None and _when(as_of) < committed), listed


def test_a_product_renamed_on_one_replica_is_got_renamed_on_the_other_at_once(
    late: tuple[grpc.Channel, grpc.Channel, LateListener],
) -> None:
    """GetProduct names one row by its key, as GetPrice: it answers what is committed, even
    while replica B has not heard the change yet."""
    a, b, replica_b = late
    owner = create_product(a, f"Got {uuid.uuid4().hex[:6]}").product_id
    assert replica_b.heard()
    get = catalog_pb2.GetProductRequest(product_id=owner)
    assert poll(lambda: catalog_call(b, "GetProduct", get).name.startswith("Got "), DEADLINE)
    with replica_b.held():
        catalog_call(
            a,
            "UpdateProduct",
            catalog_pb2.UpdateProductRequest(
                product=catalog_pb2.Product(product_id=owner, name="Renamed"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
                request_id=uuid.uuid4().hex,
            ),
        )
        assert catalog_call(b, "GetProduct", get).name == "Renamed"


def test_a_late_replica_lists_entitlements_as_of_no_later_than_its_metric_definitions(
    late: tuple[grpc.Channel, grpc.Channel, LateListener], db: Database
) -> None:
    """ListEntitlements on B of an account it does not keep (holdings read now) while its
    metric definitions are kept from before a change made through A: the page's as_of_time
    must not claim the change (each entry's own as_of_time already does not)."""
    from billing.v1 import usage_pb2, usage_pb2_grpc
    from tollbooth.usage import known_metrics

    a, b, replica_b = late
    account, code, name = seed_metered(db)
    _ingest(a, account, name, 2)
    assert replica_b.heard()
    assert known_metrics.of(replica_b.deps.db).get() is not None  # kept, the account not
    with replica_b.held():
        usage_pb2_grpc.UsageServiceStub(a).UpdateMetric(
            usage_pb2.UpdateMetricRequest(
                metric=usage_pb2.Metric(code=code, event_name=f"{name}.renamed"),
                update_mask=field_mask_pb2.FieldMask(paths=["event_name"]),
                request_id=uuid.uuid4().hex,
            ),
            metadata=SERVICE_MD,
            timeout=10,
        )
        committed = _now()
        listed = entitlement_pb2_grpc.EntitlementServiceStub(b).ListEntitlements(
            entitlement_pb2.ListEntitlementsRequest(account=account),
            metadata=SERVICE_MD,
            timeout=10,
        )
    calls = next(e for e in listed.entitlements if e.feature == "calls")
    # The renamed event has no event yet: 0 once the change is in.
    assert calls.used == "0" or _when(calls.as_of_time) < committed, calls
    assert calls.used == "0" or _when(listed.as_of_time) < committed, (listed.as_of_time, calls)


def _product_ids(channel: grpc.Channel) -> set[str]:
    """Every product ListProducts answers (page after page)."""
    ids: set[str] = set()
    token = ""
    while True:
        reply = catalog_call(
            channel,
            "ListProducts",
            catalog_pb2.ListProductsRequest(page_size=100, page_token=token),
        )
        ids.update(p.product_id for p in reply.products)
        token = reply.next_page_token
        if not token:
            return ids


def _hints(channel: grpc.Channel, bearer: tuple[tuple[str, str], ...], product: str) -> list[int]:
    reply = catalog_call(
        channel, "ListPrices", catalog_pb2.ListPricesRequest(product_id=product), metadata=bearer
    )
    return [p.hint for p in reply.prices]


def test_a_replica_that_hears_nothing_lists_and_answers_the_billing_status_fresh(
    late: tuple[grpc.Channel, grpc.Channel, LateListener], db: Database
) -> None:
    """B's listener alive but deaf to every notification (B keeps using its memory): each
    listing and billing status on B right after a change committed elsewhere holds it (the
    versions read by the call): a product and a price created, a price archived, a purchase
    (the status's entitlements and a bearer listing's hint)."""
    from tests.checkout.support import SCOPES

    a, b, replica_b = late
    account, once, _ = seed_holdings(db)
    held_product = "prod_" + once.rsplit("_", 1)[1]
    principal = "user-" + once.rsplit("_", 1)[1]
    token = token_pb2_grpc.TokenServiceStub(b).IssueToken(
        token_pb2.IssueTokenRequest(principal_id=principal, scopes=SCOPES),
        metadata=SERVICE_MD,
        timeout=10,
    )
    assert token.billing_account_id == account
    bearer = (("authorization", f"Bearer {token.access_token}"),)
    buy, current = catalog_pb2.PURCHASE_HINT_BUY, catalog_pb2.PURCHASE_HINT_CURRENT
    assert replica_b.heard()
    # Warm: B keeps the catalog and the account's holdings (nothing held).
    assert poll(
        lambda: "gold" not in _features_of(_plan(b, account)) and replica_b.keeps(account),
        DEADLINE,
    )
    assert _hints(b, bearer, held_product) == [buy, buy]
    with replica_b.deaf():
        owner = create_product(a, f"Deaf {uuid.uuid4().hex[:6]}").product_id
        assert owner in _product_ids(b)
        made = create_price(a, owner, nickname="new")
        assert _nicknames(b, owner) == ["new"]
        catalog_call(
            a,
            "ArchivePrice",
            catalog_pb2.ArchivePriceRequest(price_id=made.price_id, request_id=uuid.uuid4().hex),
        )
        assert _nicknames(b, owner) == []
        assert replica_b.keeps(account)  # kept from before, the purchase not heard of
        with db.transaction() as session:
            _purchase(session, account, once)
        assert "gold" in _features_of(_plan(b, account))
        assert _hints(b, bearer, held_product) == [current, buy]


def test_listings_begun_on_a_deaf_replica_while_its_version_read_is_in_flight_hold_a_change(
    late: tuple[grpc.Channel, grpc.Channel, LateListener], monkeypatch: pytest.MonkeyPatch
) -> None:
    """B deaf, its version read in flight (answered before a price is created on A, held):
    the listings that begin on B after A's answer wait for the next read (sent after they
    began), shared by all of them, and each lists the price."""
    from tollbooth.db import versions

    a, b, replica_b = late
    owner = create_product(a, f"Flight {uuid.uuid4().hex[:6]}").product_id
    assert replica_b.heard()
    assert _nicknames(b, owner) == []  # warm: B keeps the catalog
    db_b = replica_b.deps.db
    read_one = db_b.read_one
    held, gate = threading.Event(), threading.Event()
    sent: list[str] = []

    def holding(sql: str, params: object, **kw: object) -> object:
        if "catalog_version" not in sql:
            return read_one(sql, params, **kw)  # type: ignore[arg-type]
        sent.append(sql)
        row = read_one(sql, params, **kw)  # type: ignore[arg-type]
        if len(sent) == 1:
            held.set()
            gate.wait(DEADLINE)
        return row

    monkeypatch.setattr(db_b, "read_one", holding)
    lists: dict[int, list[str]] = {}
    with replica_b.deaf():
        first = threading.Thread(target=lambda: lists.__setitem__(-1, _nicknames(b, owner)))
        first.start()
        assert held.wait(DEADLINE)
        create_price(a, owner, nickname="new")
        later = [
            threading.Thread(target=lambda i=i: lists.__setitem__(i, _nicknames(b, owner)))
            for i in range(CLIENTS * 2)
        ]
        for t in later:
            t.start()
        coalescer = versions._coalescers.of(db_b)
        waited = poll(lambda: coalescer.waiting() >= len(later), DEADLINE)
        gate.set()
        for t in [first, *later]:
            t.join(DEADLINE)
    assert waited
    assert lists[-1] == []  # the read in flight predates the price: so does its listing
    assert all(lists[i] == ["new"] for i in range(len(later))), lists
    assert len(sent) == 2  # the held read, then one shared by every later listing
