"""DeleteCustomer whose Stripe call fails: the account is archived (committed first) but the
Stripe customer, and the subscription it pays, stay alive at Stripe. `tollbooth reconcile`
finishes it (deletes the customer, as DeleteCustomer does when Stripe answers), once, with no
transaction open across the Stripe call; a sweep whose own call fails reports it and the next
run finishes it. An account archived with ArchiveAccount (which keeps its subscriptions, as
documented) is not touched. SQLite and PostgreSQL, over real gRPC against the sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from billing.v1 import account_pb2, account_pb2_grpc, customer_pb2, customer_pb2_grpc
from tests.checkout.support import World, operator_command, start_world
from tests.checkout.test_boundary import customer_of
from tests.conftest import SERVICE_MD
from tests.helpers import error_reason, keyed
from tollbooth.db.models import BillingAccount


@pytest.fixture
def world(database_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """The provider client never retries by itself: one injected 500 is one failed call."""
    w = start_world(database_url, tmp_path, deliver=False, STRIPE_MAX_NETWORK_RETRIES="0")
    yield w
    w.stop()


def paying_customer(world: World, lookup: str = "pro") -> tuple[str, str]:
    """An account with an active subscription at Stripe: (account id, Stripe customer id)."""
    world.price(lookup)
    token, account = world.token()
    world.pay(world.buy(token, lookup).session.stripe_checkout_session_id)
    customer = customer_of(world, account)
    assert live_subscriptions(world, customer) == 1
    return account, customer


def live_subscriptions(world: World, customer: str) -> int:
    store = world.sandbox.app.state.store
    with store.lock:
        subs = [s for _, s in store.all("subscription") if s["customer"] == customer]
    return sum(1 for s in subs if s["status"] != "canceled")


def deleted_at_stripe(world: World, customer: str) -> bool:
    store = world.sandbox.app.state.store
    with store.lock:
        found: Any = store.get(customer)
    return bool(found and found.get("deleted"))


def customer_deleted_with_us(world: World, account: str) -> bool:
    with world.deps.db.transaction(readonly=True) as session:
        row = session.get(BillingAccount, account)
        assert row is not None
        return row.customer_deleted_at is not None


def delete_failing_at_stripe(world: World, customer: str) -> None:
    world.sandbox.stalls.add("DELETE", f"/v1/customers/{customer}", seconds=0, status=500)
    with pytest.raises(grpc.RpcError) as err:
        customer_pb2_grpc.CustomerServiceStub(world.channel).DeleteCustomer(
            customer_pb2.DeleteCustomerRequest(customer_id=customer), metadata=SERVICE_MD
        )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"


def reconcile(world: World, monkeypatch: Any, capsys: Any) -> tuple[int, str, str]:
    return operator_command(world, monkeypatch, capsys, "reconcile")


def test_reconcile_deletes_the_stripe_customer_a_failed_delete_customer_left(
    world: World, monkeypatch: Any, capsys: Any
) -> None:
    account, customer = paying_customer(world)
    delete_failing_at_stripe(world, customer)
    assert not deleted_at_stripe(world, customer)
    assert live_subscriptions(world, customer) == 1  # still paying: what was reported
    code, out, err = reconcile(world, monkeypatch, capsys)
    assert code == 0, err
    assert f"customer {customer} of account {account}: deleted at Stripe" in out
    assert deleted_at_stripe(world, customer)
    assert live_subscriptions(world, customer) == 0
    assert customer_deleted_with_us(world, account)
    code, out, err = reconcile(world, monkeypatch, capsys)  # again: nothing left to do
    assert code == 0, err
    assert customer not in out


def test_a_sweep_whose_stripe_call_fails_reports_it_and_the_next_run_finishes(
    world: World, monkeypatch: Any, capsys: Any
) -> None:
    account, customer = paying_customer(world)
    delete_failing_at_stripe(world, customer)
    world.sandbox.stalls.add("DELETE", f"/v1/customers/{customer}", seconds=0, status=500)
    code, out, err = reconcile(world, monkeypatch, capsys)
    assert code == 1
    assert f"FAILED customer {customer} of account {account}:" in err
    assert not deleted_at_stripe(world, customer)
    assert not customer_deleted_with_us(world, account)
    code, out, err = reconcile(world, monkeypatch, capsys)
    assert code == 0, err
    assert f"customer {customer} of account {account}: deleted at Stripe" in out
    assert deleted_at_stripe(world, customer)
    assert live_subscriptions(world, customer) == 0


def test_a_customer_deleted_at_stripe_meanwhile_is_recorded_without_a_second_delete(
    world: World, monkeypatch: Any, capsys: Any
) -> None:
    account, customer = paying_customer(world)
    delete_failing_at_stripe(world, customer)
    world.stripe.v1.customers.delete(customer)  # an operator at the dashboard
    code, out, err = reconcile(world, monkeypatch, capsys)
    assert code == 0, err
    assert f"customer {customer} of account {account}: deleted at Stripe" in out
    assert customer_deleted_with_us(world, account)


def test_an_account_archived_with_archive_account_keeps_its_stripe_customer(
    world: World, monkeypatch: Any, capsys: Any
) -> None:
    account, customer = paying_customer(world)
    account_pb2_grpc.AccountServiceStub(world.channel).ArchiveAccount(
        keyed(account_pb2.ArchiveAccountRequest(account=account)), metadata=SERVICE_MD
    )
    code, out, err = reconcile(world, monkeypatch, capsys)
    assert code == 0, err
    assert not deleted_at_stripe(world, customer)
    assert live_subscriptions(world, customer) == 1
    assert not customer_deleted_with_us(world, account)


def test_no_transaction_is_open_while_the_sweep_waits_on_stripe(pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import threading

    from tests.checkout.support import transactions_open
    from tollbooth.accounts import customer_sync
    from tollbooth.provider.client import StripeProvider

    world = start_world(pg_url, tmp_path, deliver=False, STRIPE_MAX_NETWORK_RETRIES="0")
    try:
        account, customer = paying_customer(world)
        delete_failing_at_stripe(world, customer)
        stall = world.sandbox.stalls.add("DELETE", f"/v1/customers/{customer}", seconds=30)
        provider = StripeProvider("sk_test_x", world.sandbox.url, max_network_retries=0)
        done: list[tuple[list[str], list[str]]] = []
        sweep = threading.Thread(
            target=lambda: done.append(customer_sync.sweep_deletes(world.deps.db, provider))
        )
        sweep.start()
        assert stall.entered.wait(30)
        assert transactions_open(pg_url) == 0
        stall.release.set()
        sweep.join(60)
        assert done and done[0][1] == []
        assert done[0][0] == [
            f"customer {customer} of account {account}: deleted at Stripe (DeleteCustomer left it)"
        ]
        assert deleted_at_stripe(world, customer) and customer_deleted_with_us(world, account)
    finally:
        world.stop()


def test_a_failed_delete_customer_retried_with_its_request_id_finishes_at_stripe(
    world: World,
) -> None:
    """The retry of a failed delete resends its request_id: replayed, it answers the delete
    and the Stripe customer is deleted. A second delete without that key is a delete after
    the first: NOT_FOUND, once it has finished the first's Stripe call (see below)."""
    account, customer = paying_customer(world)
    stub = customer_pb2_grpc.CustomerServiceStub(world.channel)
    request = customer_pb2.DeleteCustomerRequest(customer_id=customer, request_id="del-1")
    world.sandbox.stalls.add("DELETE", f"/v1/customers/{customer}", seconds=0, status=500)
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteCustomer(request, metadata=SERVICE_MD)
    assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
    with pytest.raises(grpc.RpcError) as other:
        stub.DeleteCustomer(
            customer_pb2.DeleteCustomerRequest(customer_id=customer), metadata=SERVICE_MD
        )
    assert other.value.code() == grpc.StatusCode.NOT_FOUND
    assert deleted_at_stripe(world, customer)
    answer = stub.DeleteCustomer(request, metadata=SERVICE_MD)
    assert (answer.id, answer.deleted) == (customer, True)
    assert deleted_at_stripe(world, customer) and customer_deleted_with_us(world, account)


def test_a_customer_whose_delete_is_still_pending_at_stripe_is_not_found(world: World) -> None:
    """DeleteCustomer committed (the account archived, the delete marked) but its Stripe call
    failed: reads and updates answer NOT_FOUND, as after a finished delete, never the stale
    customer; nothing is sent to Stripe for it."""
    account, customer = paying_customer(world)
    email = "buyer@example.com"
    stub = customer_pb2_grpc.CustomerServiceStub(world.channel)
    delete_failing_at_stripe(world, customer)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetCustomer(customer_pb2.GetCustomerRequest(customer_id=customer), metadata=SERVICE_MD)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.UpdateCustomer(
            customer_pb2.UpdateCustomerRequest(customer_id=customer, name="Stale"),
            metadata=SERVICE_MD,
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert world.stripe.v1.customers.retrieve(customer).to_dict().get("name") != "Stale"
    with pytest.raises(grpc.RpcError) as err:
        stub.GetCustomerSubscription(
            customer_pb2.GetCustomerSubscriptionRequest(customerEmail=email), metadata=SERVICE_MD
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    listed = stub.ListCustomers(customer_pb2.ListCustomersRequest(limit=100), metadata=SERVICE_MD)
    assert customer not in [c.id for c in listed.data]


def test_seed_003_delete_retried_without_request_id_finishes_at_stripe_before_not_found(
    world: World,
) -> None:
    """Seed 003's DELETE sends no request_id: a client whose delete answered 503 (Stripe
    failing) retries it as written. While Stripe still fails the retry is 503 again; once
    Stripe answers, the retry deletes the Stripe customer (and so the subscription it paid)
    and only then answers NOT_FOUND: a 404 never leaves a paying customer alive at Stripe."""
    account, customer = paying_customer(world)
    stub = customer_pb2_grpc.CustomerServiceStub(world.channel)
    retry = customer_pb2.DeleteCustomerRequest(customer_id=customer)
    delete_failing_at_stripe(world, customer)
    world.sandbox.stalls.add("DELETE", f"/v1/customers/{customer}", seconds=0, status=500)
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteCustomer(retry, metadata=SERVICE_MD)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
    assert not deleted_at_stripe(world, customer)
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteCustomer(retry, metadata=SERVICE_MD)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert deleted_at_stripe(world, customer)
    assert live_subscriptions(world, customer) == 0
    assert customer_deleted_with_us(world, account)
