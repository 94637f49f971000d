"""The billing portal of a customer DeleteCustomer deleted (finished at Stripe, or still
pending there after a failed Stripe call): NOT_FOUND, as GetCustomer answers, and Stripe is
asked nothing. SQLite and PostgreSQL, over real gRPC against the sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from billing.v1 import checkout_pb2, checkout_pb2_grpc, customer_pb2, customer_pb2_grpc
from tests.checkout.support import World, start_world
from tests.checkout.test_boundary import customer_of
from tests.conftest import SERVICE_MD, bearer_md
from tests.helpers import error_reason

BACK = "https://app.example/account"


@pytest.fixture
def world(database_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    w = start_world(database_url, tmp_path, STRIPE_MAX_NETWORK_RETRIES="0")
    yield w
    w.stop()


def portal_sessions(world: World) -> int:
    store = world.sandbox.app.state.store
    with store.lock:
        return len(store.all("billing_portal.session"))


def billed_customer(world: World) -> tuple[str, str, str]:
    """A paying account whose portal opens: (bearer token, account id, Stripe customer)."""
    token, account = world.token()
    world.pay(world.buy(token, "pro").session.stripe_checkout_session_id)
    world.settled()
    portal = checkout_pb2_grpc.CheckoutServiceStub(world.channel)
    portal.CreatePortalSession(
        checkout_pb2.CreatePortalSessionRequest(return_url=BACK), metadata=bearer_md(token)
    )
    return token, account, customer_of(world, account)


def test_the_portal_of_a_deleted_customer_is_not_found_and_asks_stripe_nothing(
    world: World,
) -> None:
    """Seed 003's portal body naming the deleted customer, a backend naming its account and a
    bearer of that account: NOT_FOUND (resource customer). Before, the portal session was
    sent to Stripe for a customer it no longer holds, and Stripe's refusal came back as 400
    PROVIDER_REQUEST_INVALID quoting it."""
    world.price("pro")
    done_token, done_account, done = billed_customer(world)
    pending_token, pending_account, pending = billed_customer(world)
    stub = customer_pb2_grpc.CustomerServiceStub(world.channel)
    stub.DeleteCustomer(customer_pb2.DeleteCustomerRequest(customer_id=done), metadata=SERVICE_MD)
    world.sandbox.stalls.add("DELETE", f"/v1/customers/{pending}", seconds=0, status=500)
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteCustomer(
            customer_pb2.DeleteCustomerRequest(customer_id=pending), metadata=SERVICE_MD
        )
    assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
    portal = checkout_pb2_grpc.CheckoutServiceStub(world.channel)
    before = portal_sessions(world)
    asks: list[tuple[checkout_pb2.CreatePortalSessionRequest, Any]] = []
    for token, account, customer in (
        (done_token, done_account, done),
        (pending_token, pending_account, pending),
    ):
        asks += [
            (
                checkout_pb2.CreatePortalSessionRequest(customer=customer, return_url=BACK),
                SERVICE_MD,
            ),
            (checkout_pb2.CreatePortalSessionRequest(account=account, return_url=BACK), SERVICE_MD),
            (checkout_pb2.CreatePortalSessionRequest(return_url=BACK), bearer_md(token)),
        ]
    for request, metadata in asks:
        with pytest.raises(grpc.RpcError) as err:
            portal.CreatePortalSession(request, metadata=metadata)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, (request, err.value.details())
        assert error_reason(err.value) == "NOT_FOUND"
    assert portal_sessions(world) == before
