"""UpdateAccount whose Stripe customer update fails: the account change is committed and
answered, the Stripe customer keeps the old fields (`customer_version < version`).
`tollbooth reconcile` brings it up to the account, with no transaction open across the Stripe
call; a sweep whose own call fails reports it and the next run finishes it. SQLite and
PostgreSQL, over real gRPC against the sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import field_mask_pb2

from billing.v1 import account_pb2, account_pb2_grpc, customer_pb2, customer_pb2_grpc
from tests.checkout.support import World, operator_command, start_world
from tests.conftest import SERVICE_MD
from tests.helpers import keyed
from tollbooth.db.models import BillingAccount


@pytest.fixture
def world(database_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """The provider client never retries by itself: one injected 500 is one failed call."""
    w = start_world(database_url, tmp_path, deliver=False, STRIPE_MAX_NETWORK_RETRIES="0")
    yield w
    w.stop()


def customer_with_account(world: World, email: str) -> tuple[str, str]:
    made = customer_pb2_grpc.CustomerServiceStub(world.channel).CreateCustomer(
        customer_pb2.CreateCustomerRequest(email=email, name="Before"), metadata=SERVICE_MD
    )
    return made.account_id, made.id


def update_email_failing_at_stripe(world: World, account: str, customer: str, email: str) -> None:
    world.sandbox.stalls.add("POST", f"/v1/customers/{customer}", seconds=0, status=500)
    updated = account_pb2_grpc.AccountServiceStub(world.channel).UpdateAccount(
        keyed(
            account_pb2.UpdateAccountRequest(
                account=account_pb2.Account(id=account, email=email),
                update_mask=field_mask_pb2.FieldMask(paths=["email"]),
            )
        ),
        metadata=SERVICE_MD,
    )
    assert updated.email == email  # the change is ours: committed and answered


def email_at_stripe(world: World, customer: str) -> str:
    return str(world.stripe.v1.customers.retrieve(customer).email)


def behind(world: World, account: str) -> bool:
    with world.deps.db.transaction(readonly=True) as session:
        row = session.get(BillingAccount, account)
        assert row is not None
        return row.customer_version < row.version


def reconcile(world: World, monkeypatch: Any, capsys: Any) -> tuple[int, str, str]:
    return operator_command(world, monkeypatch, capsys, "reconcile")


def reconciled_leaving_alone(world: World, monkeypatch: Any, capsys: Any, customer: str) -> None:
    """A reconcile run that succeeds and says nothing about `customer`."""
    code, out, err = reconcile(world, monkeypatch, capsys)
    assert code == 0, err
    assert customer not in out and "FAILED" not in err


def test_reconcile_updates_the_stripe_customer_a_failed_sync_left_behind(
    world: World, monkeypatch: Any, capsys: Any
) -> None:
    account, customer = customer_with_account(world, "before@example.com")
    update_email_failing_at_stripe(world, account, customer, "after@example.com")
    assert email_at_stripe(world, customer) == "before@example.com"
    assert behind(world, account)
    code, out, err = reconcile(world, monkeypatch, capsys)
    assert code == 0, err
    assert f"customer {customer} of account {account}: updated at Stripe" in out
    assert email_at_stripe(world, customer) == "after@example.com"
    assert not behind(world, account)
    reconciled_leaving_alone(world, monkeypatch, capsys, customer)  # again: nothing to do


def test_a_sweep_whose_stripe_call_fails_reports_it_and_the_next_run_finishes(
    world: World, monkeypatch: Any, capsys: Any
) -> None:
    account, customer = customer_with_account(world, "first@example.com")
    update_email_failing_at_stripe(world, account, customer, "second@example.com")
    world.sandbox.stalls.add("POST", f"/v1/customers/{customer}", seconds=0, status=500)
    code, out, err = reconcile(world, monkeypatch, capsys)
    assert code == 1
    assert f"FAILED customer of account {account}:" in err
    assert email_at_stripe(world, customer) == "first@example.com"
    assert behind(world, account)
    code, out, err = reconcile(world, monkeypatch, capsys)
    assert code == 0, err
    assert f"customer {customer} of account {account}: updated at Stripe" in out
    assert email_at_stripe(world, customer) == "second@example.com"
    assert not behind(world, account)


def test_an_account_in_step_with_its_customer_is_left_alone(
    world: World, monkeypatch: Any, capsys: Any
) -> None:
    account, customer = customer_with_account(world, "steady@example.com")
    assert not behind(world, account)
    reconciled_leaving_alone(world, monkeypatch, capsys, customer)


def test_a_customer_deleted_at_stripe_meanwhile_is_recorded_not_failed_every_run(
    world: World, monkeypatch: Any, capsys: Any
) -> None:
    """The Stripe customer was deleted at Stripe itself (the dashboard) after a failed sync
    left the account behind: Stripe refuses to update it ever again, so each reconcile failed
    (exit 1) forever. It is recorded deleted, as the delete sweep records a customer Stripe no
    longer knows, and left alone."""
    account, customer = customer_with_account(world, "gone@example.com")
    update_email_failing_at_stripe(world, account, customer, "gone2@example.com")
    world.stripe.v1.customers.delete(customer)
    code, out, err = reconcile(world, monkeypatch, capsys)
    assert code == 0, err
    assert f"customer {customer} of account {account}: deleted at Stripe" in out
    reconciled_leaving_alone(world, monkeypatch, capsys, customer)  # again: nothing to do


def test_an_account_a_concurrent_sync_caught_up_is_not_reported_updated(
    world: World, monkeypatch: Any, capsys: Any
) -> None:
    """The sweep lists the accounts behind, then syncs each with no transaction open: one
    whose own sync (a concurrent UpdateAccount, another reconcile) finished in between has
    nothing left to send, and the report must not say the sweep updated it at Stripe."""
    from tollbooth.accounts import repository

    account, customer = customer_with_account(world, "raced@example.com")
    assert not behind(world, account)  # as the concurrent sync left it
    monkeypatch.setattr(repository, "customers_behind", lambda session: [account])
    reconciled_leaving_alone(world, monkeypatch, capsys, customer)


def test_the_sweep_sends_under_a_key_of_its_own(
    world: World, monkeypatch: Any, capsys: Any
) -> None:
    """Stripe saves the answer to the first request under an idempotency key once its
    handling began, a 500 included, and answers every retry under that key with it for 24 h
    (docs.stripe.com/api/idempotent_requests). A sweep that sent the failed sync's request
    under the failed sync's key would get that 500 back on every run for a day. Each run
    sends under a key of its own."""
    from tollbooth.provider.client import StripeProvider

    keys: list[str] = []
    update = StripeProvider.update_customer

    def recording(self, customer_id, params, *, idempotency):  # type: ignore[no-untyped-def]
        keys.append(idempotency)
        return update(self, customer_id, params, idempotency=idempotency)

    monkeypatch.setattr(StripeProvider, "update_customer", recording)
    account, customer = customer_with_account(world, "key@example.com")
    keys.clear()
    update_email_failing_at_stripe(world, account, customer, "key2@example.com")
    assert len(keys) == 1  # the failed sync's
    world.sandbox.stalls.add("POST", f"/v1/customers/{customer}", seconds=0, status=500)
    assert reconcile(world, monkeypatch, capsys)[0] == 1
    assert reconcile(world, monkeypatch, capsys)[0] == 0
    assert len(keys) == 3 and len(set(keys)) == 3, keys
