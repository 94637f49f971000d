"""A replay is not a new write: a request_id already answered, sent again with the same body, is
answered as stored without being counted in (or refused by) its operation's rate limits, even
once they are used up; a new request_id still is refused, and so is a reused request_id with
another body (counted as any call)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from billing.v1 import (
    checkout_pb2,
    checkout_pb2_grpc,
    customer_pb2,
    customer_pb2_grpc,
    payment_pb2,
    payment_pb2_grpc,
)
from tests.checkout.support import World, start_world
from tests.conftest import SERVICE_KEY, SERVICE_MD, bearer_md
from tests.helpers import error_reason
from tests.tcpproxy import Proxy
from tollbooth.db.models import CheckoutSession, RateLimitCounter
from tollbooth.db.payment_intents import PaymentIntent
from tollbooth.rpc.ratelimit import key_identity


@contextmanager
def limited_world(database_url: str, tmp: Path, **env: str) -> Iterator[World]:
    world = start_world(database_url, tmp, **env)
    try:
        yield world
    finally:
        world.stop()


def counted(world: World, limit: str, who: str) -> int:
    """The calls counted in `limit` for `who` (`account:…`, `key:…`) in the current window."""
    with world.deps.db.transaction(readonly=True) as session:
        found = session.scalar(
            select(RateLimitCounter.count).where(RateLimitCounter.key.like(f"%/{limit}/{who}/%"))
        )
    return int(found or 0)


def refusal(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), error_reason(err.value)


RATE_LIMITED = (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")


def buy(
    world: World, token: str, request_id: str, *, quantity: int = 1, currency: str = "usd"
) -> checkout_pb2.CreateCheckoutSessionResponse:
    return world.checkout.CreateCheckoutSession(
        checkout_pb2.CreateCheckoutSessionRequest(
            items=[checkout_pb2.CheckoutItem(lookup_key="pack", quantity=quantity)],
            success_url="https://app.example/ok",
            currency=currency,
            request_id=request_id,
        ),
        metadata=bearer_md(token),
        timeout=30,
    )


def test_a_replayed_checkout_is_answered_past_a_used_up_limit_and_not_counted(
    database_url: str, tmp_path: Path
) -> None:
    with limited_world(
        database_url, tmp_path, BILLING_RATE_LIMIT_SESSION_CREATES="3/minute"
    ) as world:
        world.price("pack", recurring=False, stackable=True, amount=500)
        token, account = world.token()
        ids = [f"buy-{uuid.uuid4().hex}" for _ in range(3)]
        first = [buy(world, token, rid) for rid in ids]
        assert len({answer.checkout_session_id for answer in first}) == 3
        assert refusal(lambda: buy(world, token, f"buy-{uuid.uuid4().hex}")) == RATE_LIMITED
        used = counted(world, "session_creates", f"account:{account}")
        assert used >= 3

        # The same request again, and in another spelling of its currency: the first answer,
        # byte for byte, and the count as it was.
        again = [buy(world, token, ids[0]), buy(world, token, ids[1], currency="USD")]
        assert [a.SerializeToString(deterministic=True) for a in again] == [
            a.SerializeToString(deterministic=True) for a in first[:2]
        ]
        assert counted(world, "session_creates", f"account:{account}") == used
        assert world.count(CheckoutSession) == 3

        # A new request_id is still refused, and counted.
        assert refusal(lambda: buy(world, token, f"buy-{uuid.uuid4().hex}")) == RATE_LIMITED
        assert counted(world, "session_creates", f"account:{account}") == used + 1


def test_a_request_id_reused_with_another_body_is_refused_and_counted(
    database_url: str, tmp_path: Path
) -> None:
    with limited_world(
        database_url, tmp_path, BILLING_RATE_LIMIT_SESSION_CREATES="3/minute"
    ) as world:
        world.price("pack", recurring=False, stackable=True, amount=500)
        token, account = world.token()
        rid = f"buy-{uuid.uuid4().hex}"
        buy(world, token, rid)
        other = lambda: buy(world, token, rid, quantity=2)  # noqa: E731
        assert refusal(other) == (grpc.StatusCode.INVALID_ARGUMENT, "IDEMPOTENCY_KEY_REUSED")
        assert counted(world, "session_creates", f"account:{account}") == 2
        buy(world, token, f"buy-{uuid.uuid4().hex}")  # the third: the limit is used up
        # Not a replay: refused by the limit as any new call is.
        assert refusal(other) == RATE_LIMITED
        assert counted(world, "session_creates", f"account:{account}") == 4
        assert world.count(CheckoutSession) == 2


def test_backend_replays_of_portal_sessions_and_payment_intents_are_not_counted(
    database_url: str, tmp_path: Path
) -> None:
    """A backend naming the account: portal sessions and payment intents replayed past a
    used-up `session_creates`, neither counted there nor in the key's `customer_creates`."""
    with limited_world(
        database_url, tmp_path, BILLING_RATE_LIMIT_SESSION_CREATES="4/minute"
    ) as world:
        world.price("pack", recurring=False, stackable=True, amount=500)
        token, account = world.token()
        world.billed(token, "pack")  # the first count: a portal needs a billed account
        checkout = checkout_pb2_grpc.CheckoutServiceStub(world.channel)
        payments = payment_pb2_grpc.PaymentServiceStub(world.channel)

        def portal(rid: str) -> checkout_pb2.PortalSession:
            return checkout.CreatePortalSession(
                checkout_pb2.CreatePortalSessionRequest(
                    account=account, return_url="https://app.example/account", request_id=rid
                ),
                metadata=SERVICE_MD,
                timeout=30,
            )

        def intent(rid: str, currency: str = "usd") -> payment_pb2.PaymentIntent:
            return payments.CreatePaymentIntent(
                payment_pb2.CreatePaymentIntentRequest(
                    account=account, amount=2999, currency=currency, request_id=rid
                ),
                metadata=SERVICE_MD,
                timeout=30,
            )

        p0, i0 = f"portal-{uuid.uuid4().hex}", f"intent-{uuid.uuid4().hex}"
        first_portal, first_intent = portal(p0), intent(i0)
        portal(f"portal-{uuid.uuid4().hex}")  # the fourth: used up
        assert refusal(lambda: intent(f"intent-{uuid.uuid4().hex}")) == RATE_LIMITED
        assert refusal(lambda: portal(f"portal-{uuid.uuid4().hex}")) == RATE_LIMITED
        sessions = counted(world, "session_creates", f"account:{account}")
        creates = counted(world, "customer_creates", f"key:{key_identity(SERVICE_KEY)}")

        assert portal(p0) == first_portal
        assert intent(i0, currency="USD") == first_intent
        assert counted(world, "session_creates", f"account:{account}") == sessions
        assert counted(world, "customer_creates", f"key:{key_identity(SERVICE_KEY)}") == creates
        assert world.count(PaymentIntent) == 1
        assert refusal(lambda: intent(f"intent-{uuid.uuid4().hex}")) == RATE_LIMITED


def test_replayed_customer_creates_and_updates_pass_their_used_up_hourly_limits(
    database_url: str, tmp_path: Path
) -> None:
    """Seed 003's customer operations: CreateCustomer (`customer_creates`) and UpdateCustomer
    (`customer_queries`), each idempotent by request_id, replayed past their limits."""
    with limited_world(
        database_url,
        tmp_path,
        BILLING_RATE_LIMIT_CUSTOMER_CREATES="2/hour",
        BILLING_RATE_LIMIT_CUSTOMER_QUERIES="2/hour",
    ) as world:
        stub = customer_pb2_grpc.CustomerServiceStub(world.channel)
        key = f"key:{key_identity(SERVICE_KEY)}"

        def create(rid: str) -> customer_pb2.Customer:
            return stub.CreateCustomer(
                customer_pb2.CreateCustomerRequest(name=f"Customer {rid}", request_id=rid),
                metadata=SERVICE_MD,
                timeout=30,
            )

        c0 = f"cust-{uuid.uuid4().hex}"
        made = create(c0)
        create(f"cust-{uuid.uuid4().hex}")
        assert refusal(lambda: create(f"cust-{uuid.uuid4().hex}")) == RATE_LIMITED
        used = counted(world, "customer_creates", key)
        assert create(c0).id == made.id
        assert counted(world, "customer_creates", key) == used

        def update(rid: str, name: str) -> customer_pb2.Customer:
            return stub.UpdateCustomer(
                customer_pb2.UpdateCustomerRequest(customer_id=made.id, name=name, request_id=rid),
                metadata=SERVICE_MD,
                timeout=30,
            )

        u0 = f"upd-{uuid.uuid4().hex}"
        renamed = update(u0, "Renamed once")
        update(f"upd-{uuid.uuid4().hex}", "Renamed twice")
        assert refusal(lambda: update(f"upd-{uuid.uuid4().hex}", "Thrice")) == RATE_LIMITED
        used = counted(world, "customer_queries", key)
        assert update(u0, "Renamed once") == renamed
        assert counted(world, "customer_queries", key) == used
        # The same request_id with another name is no replay: refused by the limit.
        assert refusal(lambda: update(u0, "Renamed otherwise")) == RATE_LIMITED


@pytest.mark.postgres
def test_retries_through_a_database_outage_do_not_use_up_the_limit(
    pg_url: str, tmp_path: Path
) -> None:
    """A client retrying one checkout while the database is down (the counters elsewhere:
    BILLING_RATE_LIMIT_STORAGE, here memory://) is not counted for calls that could do
    nothing: once the database is back, its retry creates the checkout instead of 429."""
    proxy = Proxy.to(pg_url)
    port = proxy.port
    env = {
        "BILLING_RATE_LIMIT_STORAGE": "memory://",
        "BILLING_RATE_LIMIT_SESSION_CREATES": "3/minute",
    }
    try:
        with limited_world(proxy.through(pg_url), tmp_path, **env) as world:
            world.price("pack", recurring=False, stackable=True, amount=500)
            token, _ = world.token()
            rid = f"buy-{uuid.uuid4().hex}"
            proxy.close()  # the database is gone: connections refused
            for _ in range(5):
                code, _reason = refusal(lambda: buy(world, token, rid))
                assert code == grpc.StatusCode.UNAVAILABLE
            proxy = Proxy.to(pg_url, listen_port=port)  # back
            answer = None
            for _ in range(3):  # a pooled connection from before may fail once more
                try:
                    answer = buy(world, token, rid)
                    break
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, error_reason(err)
            assert answer is not None and answer.checkout_session_id
            assert world.count(CheckoutSession) == 1
    finally:
        proxy.close()
