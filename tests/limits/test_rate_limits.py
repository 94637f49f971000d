"""Rate limits per caller and per operation class, counted in a storage every replica shares."""

from __future__ import annotations

import threading
import uuid

import grpc
import pytest
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import func, select, update

from billing.v1 import checkout_pb2, checkout_pb2_grpc, token_pb2, token_pb2_grpc
from tests.conftest import OTHER_SERVICE_KEY, SERVICE_MD, bearer_md
from tests.helpers import error_reason, keyed
from tests.limits.support import retry_delay, server, token
from tollbooth.config import ConfigError, Settings
from tollbooth.db import Database
from tollbooth.db.migrate import upgrade
from tollbooth.db.models import BillingAccount, RateLimitCounter
from tollbooth.rpc.ratelimit import Leases, RateLimited, RateLimiter, lease_size, method_classes
from tollbooth.rpc.ratestore import SCHEME, DatabaseStorage

CHECKOUT = "/billing.v1.CheckoutService/"


def portal(channel: grpc.Channel, md: tuple, account: str = "") -> grpc.StatusCode:
    """One CreatePortalSession; the status it ended with (OK or the error's code)."""
    stub = checkout_pb2_grpc.CheckoutServiceStub(channel)
    try:
        stub.CreatePortalSession(
            keyed(checkout_pb2.CreatePortalSessionRequest(account=account)),
            metadata=md,
            timeout=10,
        )
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_methods_fall_in_their_classes() -> None:
    table = method_classes()
    assert table[CHECKOUT + "CreateCheckoutSession"] == ("session_creates", "customer_creates")
    assert table[CHECKOUT + "CreatePortalSession"] == ("session_creates", "customer_creates")
    assert table[CHECKOUT + "GetBillingStatus"] == ("customer_queries",)
    assert table["/billing.v1.CreditService/GetBalance"] == ()
    # Seed 003's customer management counts in its own hourly classes.
    assert table["/billing.v1.CustomerService/CreateCustomer"] == ("customer_creates",)
    assert table["/billing.v1.CustomerService/ListCustomers"] == ("customer_queries",)


def test_the_storage_is_registered_with_limits_under_its_scheme(database_url: str) -> None:
    upgrade(database_url)
    db = Database(database_url)
    try:
        storage = storage_from_string(f"{SCHEME}://", database=db)
        assert isinstance(storage, DatabaseStorage)
        assert storage.check()
    finally:
        db.dispose()


@pytest.mark.postgres
def test_two_replicas_share_one_count_under_concurrent_hits(pg_url: str) -> None:
    """Two storages on two engines (as two replicas have), 8 threads hitting one key at once:
    exactly the limit is admitted."""
    upgrade(pg_url)
    dbs = [Database(pg_url), Database(pg_url)]
    limiters = [FixedWindowRateLimiter(DatabaseStorage(database=db)) for db in dbs]
    item = parse("30/minute")
    key = uuid.uuid4().hex
    admitted: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def client(n: int) -> None:
        barrier.wait()
        for _ in range(10):
            allowed = limiters[n % 2].hit(item, "test", key)
            with lock:
                admitted.append(allowed)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(admitted) == 80
        assert admitted.count(True) == 30
        assert DatabaseStorage(database=dbs[0]).get(item.key_for("test", key)) == 80
    finally:
        for db in dbs:
            db.dispose()


class CountingStorage(DatabaseStorage):
    """The database storage, counting its round trips."""

    upserts = 0

    def incr_window(self, key: str, expiry: int, amount: int = 1) -> tuple[int, int]:
        type(self).upserts += 1
        return super().incr_window(key, expiry, amount)


@pytest.mark.postgres
def test_leases_of_two_replicas_admit_at_most_the_ceiling_in_few_round_trips(
    pg_url: str,
) -> None:
    """The general ceilings in leases (two processes, 8 threads, 1,600 calls on one key with
    a ceiling of 1,000): never more than the ceiling admitted, at most one unused lease per
    process short of it, and one upsert per lease instead of one per call."""
    upgrade(pg_url)
    dbs = [Database(pg_url), Database(pg_url)]
    CountingStorage.upserts = 0
    leases = [Leases(CountingStorage(database=db)) for db in dbs]
    item = parse("1000/minute")
    batch = lease_size(item)
    key = uuid.uuid4().hex
    admitted: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def client(n: int) -> None:
        barrier.wait()
        for _ in range(200):
            allowed = leases[n % 2].hit(item, "account", key)
            with lock:
                admitted.append(allowed)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert batch == 10 and len(admitted) == 1600
        assert 1000 - 2 * batch <= admitted.count(True) <= 1000
        # One upsert per lease, and once the window is used up refusals from memory: at most
        # one lease per batch plus one attempt per thread racing the end of the window.
        assert CountingStorage.upserts <= 1000 // batch + 2 * 8
    finally:
        for db in dbs:
            db.dispose()


def test_session_creates_over_the_limit_are_resource_exhausted_with_retry_info(
    database_url: str,
) -> None:
    with server(database_url, BILLING_RATE_LIMIT_SESSION_CREATES="3/minute") as (ch, _, _h):
        md = bearer_md(token(ch, f"rl-{uuid.uuid4().hex[:8]}", ("portal",)))
        first = [portal(ch, md) for _ in range(3)]
        assert grpc.StatusCode.RESOURCE_EXHAUSTED not in first
        stub = checkout_pb2_grpc.CheckoutServiceStub(ch)
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreatePortalSession(
                keyed(checkout_pb2.CreatePortalSessionRequest()), metadata=md, timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_reason(refused.value) == "RATE_LIMITED"
        delay = retry_delay(refused.value)
        assert delay is not None and 1 <= delay <= 60
        trailers = dict(refused.value.trailing_metadata() or ())  # type: ignore[attr-defined]
        assert trailers["retry-after"] == str(delay)
        assert trailers["ratelimit-policy"] == '"session_creates";q=3;w=60'
        # Another account has its own count.
        other = bearer_md(token(ch, f"rl-{uuid.uuid4().hex[:8]}", ("portal",)))
        assert portal(ch, other) != grpc.StatusCode.RESOURCE_EXHAUSTED


def test_backend_session_creates_count_per_named_account(database_url: str) -> None:
    with server(database_url, BILLING_RATE_LIMIT_SESSION_CREATES="2/minute") as (ch, _, _h):
        a, b = f"acct-a-{uuid.uuid4().hex[:6]}", f"acct-b-{uuid.uuid4().hex[:6]}"
        assert [portal(ch, SERVICE_MD, a) for _ in range(3)][-1] == (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert portal(ch, SERVICE_MD, b) != grpc.StatusCode.RESOURCE_EXHAUSTED


def test_one_account_named_three_ways_is_one_count(database_url: str) -> None:
    """By alias, by id, with spaces around it, or through a bearer token of its own: one
    account, one `session_creates` count (naming it differently does not buy more)."""
    with server(database_url, BILLING_RATE_LIMIT_SESSION_CREATES="4/minute") as (ch, _, _h):
        alias = f"rl-named-{uuid.uuid4().hex[:8]}"
        md = bearer_md(token(ch, alias, ("portal",)))
        account_id = (
            token_pb2_grpc.TokenServiceStub(ch)
            .IssueToken(keyed(token_pb2.IssueTokenRequest(principal_id=alias)), metadata=SERVICE_MD)
            .billing_account_id
        )
        names = [alias, account_id, f"  {alias} "]
        admitted = [portal(ch, SERVICE_MD, name) for name in names] + [portal(ch, md)]
        assert grpc.StatusCode.RESOURCE_EXHAUSTED not in admitted
        for name in names:
            assert portal(ch, SERVICE_MD, name) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert portal(ch, md) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_backend_naming_the_account_by_its_customer_counts_for_the_account(
    database_url: str,
) -> None:
    """Seed 003's portal body names the provider customer alone: counted for its account."""
    with server(database_url, BILLING_RATE_LIMIT_SESSION_CREATES="2/minute") as (ch, deps, _h):
        alias = f"rl-cus-{uuid.uuid4().hex[:8]}"
        token(ch, alias)
        customer = f"cus_rl{uuid.uuid4().hex[:12]}"
        with deps.db.transaction() as session:
            session.execute(
                update(BillingAccount)
                .where(BillingAccount.principal_id == alias)
                .values(stripe_customer_id=customer)
            )
        stub = checkout_pb2_grpc.CheckoutServiceStub(ch)

        def by_customer() -> grpc.StatusCode:
            try:
                stub.CreatePortalSession(
                    keyed(checkout_pb2.CreatePortalSessionRequest(customer=customer)),
                    metadata=SERVICE_MD,
                    timeout=10,
                )
            except grpc.RpcError as err:
                return err.code()  # type: ignore[no-any-return]
            return grpc.StatusCode.OK

        assert by_customer() != grpc.StatusCode.RESOURCE_EXHAUSTED
        assert portal(ch, SERVICE_MD, alias) != grpc.StatusCode.RESOURCE_EXHAUSTED
        assert by_customer() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert portal(ch, SERVICE_MD, alias) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_long_named_account_is_counted_too_not_let_through(database_url: str) -> None:
    """The counter's key must fit its column whatever account a backend names (up to the
    edge's 1000 characters): a key too long for it failed the storage, and a failing storage
    lets every call through, past the key's own limit too."""
    with server(database_url, BILLING_RATE_LIMIT_SESSION_CREATES="2/minute") as (ch, _, _h):
        long_a = f"acct-{uuid.uuid4().hex}-" + "a" * 300
        long_b = long_a[:-1] + "b"  # the same first 300 characters: counted apart all the same
        assert [portal(ch, SERVICE_MD, long_a) for _ in range(3)][-1] == (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert portal(ch, SERVICE_MD, long_b) != grpc.StatusCode.RESOURCE_EXHAUSTED


def test_customer_queries_count_per_backend_key(database_url: str) -> None:
    with server(database_url, BILLING_RATE_LIMIT_CUSTOMER_QUERIES="3/hour") as (ch, _, _h):
        stub = checkout_pb2_grpc.CheckoutServiceStub(ch)

        def query(md: tuple) -> grpc.StatusCode:
            try:
                stub.GetBillingStatus(
                    checkout_pb2.GetBillingStatusRequest(account="nobody"), metadata=md
                )
            except grpc.RpcError as err:
                return err.code()  # type: ignore[no-any-return]
            return grpc.StatusCode.OK

        codes = [query(SERVICE_MD) for _ in range(4)]
        assert codes[:3] == [grpc.StatusCode.NOT_FOUND] * 3
        assert codes[3] == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert query((("x-api-key", OTHER_SERVICE_KEY),)) == grpc.StatusCode.NOT_FOUND


def test_general_account_ceiling_covers_every_bearer_call(database_url: str) -> None:
    with server(database_url, BILLING_RATE_LIMIT_ACCOUNT="2/minute") as (ch, _, _h):
        md = bearer_md(token(ch, f"rl-{uuid.uuid4().hex[:8]}", ("billing:read",)))
        stub = checkout_pb2_grpc.CheckoutServiceStub(ch)
        stub.GetBillingStatus(checkout_pb2.GetBillingStatusRequest(), metadata=md)
        stub.ListPurchases(checkout_pb2.ListPurchasesRequest(), metadata=md)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetBillingStatus(checkout_pb2.GetBillingStatusRequest(), metadata=md)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_reason(refused.value) == "RATE_LIMITED"


def test_a_class_turned_off_is_not_counted(database_url: str) -> None:
    with server(database_url, BILLING_RATE_LIMIT_SESSION_CREATES="off") as (ch, _, _h):
        md = bearer_md(token(ch, f"rl-{uuid.uuid4().hex[:8]}", ("portal",)))
        assert grpc.StatusCode.RESOURCE_EXHAUSTED not in [portal(ch, md) for _ in range(25)]


def test_an_unusable_rate_names_its_variable() -> None:
    with pytest.raises(ConfigError, match="BILLING_RATE_LIMIT_SESSION_CREATES"):
        Settings.from_env({"BILLING_RATE_LIMIT_SESSION_CREATES": "many"})
    assert Settings.from_env({}).rate_limit_session_creates == "20/minute"


def test_a_limits_storage_uri_replaces_the_database(database_url: str) -> None:
    """BILLING_RATE_LIMIT_STORAGE takes any `limits` storage (memory:// is one process's)."""
    env = {
        "BILLING_RATE_LIMIT_STORAGE": "memory://",
        "BILLING_RATE_LIMIT_SESSION_CREATES": "1/hour",
    }
    with server(database_url, **env) as (ch, deps, _h):
        md = bearer_md(token(ch, f"rl-{uuid.uuid4().hex[:8]}", ("portal",)))
        assert [portal(ch, md) for _ in range(2)][-1] == grpc.StatusCode.RESOURCE_EXHAUSTED
        with deps.db.transaction(readonly=True) as session:
            assert session.scalar(select(func.count()).select_from(RateLimitCounter)) == 0


def test_an_unreachable_counter_store_lets_calls_through() -> None:
    """A storage outage is logged and the call proceeds: billing does not stop with it."""
    db = Database("postgresql://postgres@127.0.0.1:1/nowhere", pool_pre_ping=False)
    try:
        limiter = RateLimiter(DatabaseStorage(database=db), {"key": parse("1/hour")})
        for _ in range(3):
            limiter.charge(CHECKOUT + "GetBillingStatus", "service", lambda name: "key:k")
    finally:
        db.dispose()


def test_a_reachable_store_refuses_the_call_over_the_limit(database_url: str) -> None:
    db = Database(database_url)
    try:
        limiter = RateLimiter(DatabaseStorage(database=db), {"key": parse("1/hour")})
        limiter.charge(CHECKOUT + "GetBillingStatus", "service", lambda name: "key:k")
        with pytest.raises(RateLimited) as refused:
            limiter.charge(CHECKOUT + "GetBillingStatus", "service", lambda name: "key:k")
        assert refused.value.reason == "RATE_LIMITED"
        assert 3500 <= (refused.value.retry_after_sec or 0) <= 3600
    finally:
        db.dispose()
