"""The provider is the truth (issue 14, findings 3 and 6): webhook handlers read the provider
outside any transaction, then apply under locks; fulfilment acts on the provider's session and
subscription, never on the event body alone."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from billing.v1 import catalog_pb2, credit_pb2
from tests.checkout.support import World, events_of, signed_send, start_world, wait_for
from tests.conftest import SERVICE_MD
from tollbooth.db.models import (
    BillingAccount,
    CheckoutSession,
    CreditGrant,
    StripeEvent,
    Subscription,
)

GRANTS = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="100", on_purchase=True)]


@pytest.fixture
def quiet(database_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    w = start_world(database_url, tmp_path, deliver=False)
    yield w
    w.stop()


def stored(world: World, event_id: str) -> StripeEvent | None:
    with world.deps.db.transaction(readonly=True) as session:
        row = session.get(StripeEvent, event_id)
        if row is not None:
            session.expunge(row)
        return row


def send(world: World, evt: dict[str, Any]) -> int:
    return signed_send(world, json.dumps(evt).encode())


def test_an_unrelated_write_completes_while_a_webhooks_provider_read_is_held_open(tmp_path):  # type: ignore[no-untyped-def]
    """On SQLite (one writer at a time): the event is committed and the provider read runs
    with no transaction open, so a grant to another account is not stuck behind it."""
    from tests.devstack import migrated_sqlite

    world = start_world(migrated_sqlite(tmp_path / "billing.db"), tmp_path, deliver=False)
    try:
        world.price("pro", grants=GRANTS)
        token, account = world.token()
        stripe_id = world.buy(token, "pro").session.stripe_checkout_session_id
        world.pay(stripe_id)
        completed = events_of(world, "checkout.session.completed", stripe_id)[0]
        _, other = world.token()
        provider = world.sandbox.app.state.store.lock  # every sandbox request takes it
        answers: list[int] = []
        with provider:  # the provider stalls
            sender = threading.Thread(target=lambda: answers.append(send(world, completed)))
            sender.start()
            wait_for(lambda: stored(world, completed["id"]) is not None, 10, "the event stored")
            granted = world.credits.GrantCredits(
                credit_pb2.GrantCreditsRequest(
                    account=other, credit_type="units", amount="5", request_id=uuid.uuid4().hex
                ),
                metadata=SERVICE_MD,
                timeout=5,
            )
            assert granted.amount == "5"
            assert answers == []  # the webhook is still waiting for the provider
        sender.join(30)
        assert answers == [200]
        assert world.balance(account, "api_calls") == "100"
    finally:
        world.stop()


def test_an_event_of_the_other_livemode_is_stored_and_ignored(quiet: World):
    quiet.price("pro", grants=GRANTS)
    token, account = quiet.token()
    stripe_id = quiet.buy(token, "pro").session.stripe_checkout_session_id
    quiet.pay(stripe_id)
    completed = events_of(quiet, "checkout.session.completed", stripe_id)[0]
    live = {**completed, "id": completed["id"] + "_live", "livemode": True}
    assert send(quiet, live) == 200
    row = stored(quiet, live["id"])
    assert row is not None and row.status == "ignored"
    assert row.last_error is not None and "live-mode" in row.last_error
    assert quiet.count(CreditGrant, CreditGrant.billing_account_id == account) == 0
    assert send(quiet, completed) == 200  # the test-mode event itself applies
    assert quiet.balance(account, "api_calls") == "100"


def test_a_completed_event_for_a_session_the_provider_reports_unpaid_grants_nothing(
    quiet: World,
):
    quiet.price("pro", grants=GRANTS)
    token, account = quiet.token()
    stripe_id = quiet.buy(token, "pro").session.stripe_checkout_session_id  # never paid
    forged = {
        "id": f"evt_forged_{uuid.uuid4().hex[:8]}",
        "object": "event",
        "type": "checkout.session.completed",
        "livemode": False,
        "data": {
            "object": {
                "id": stripe_id,
                "object": "checkout.session",
                "status": "complete",
                "payment_status": "paid",
                "subscription": "sub_forged",
            }
        },
    }
    assert send(quiet, forged) == 200
    assert quiet.count(CreditGrant, CreditGrant.billing_account_id == account) == 0
    assert quiet.count(Subscription) == 0
    with quiet.deps.db.transaction(readonly=True) as session:
        row = session.scalars(select(CheckoutSession)).one()
        assert (row.status, row.payment_status, row.fulfilled_at) == ("open", "unpaid", None)
    assert stored(quiet, forged["id"]).status == "applied"  # type: ignore[union-attr]


def test_an_unknown_subscription_of_a_known_customer_leaves_no_row(quiet: World):
    quiet.price("pro", grants=GRANTS)
    token, account = quiet.token()
    quiet.buy(token, "pro")  # the account becomes a provider customer
    with quiet.deps.db.transaction(readonly=True) as session:
        customer = session.get(BillingAccount, account).stripe_customer_id  # type: ignore[union-attr]
    assert customer
    for kind in ("customer.subscription.updated", "customer.subscription.created"):
        evt = {
            "id": f"evt_unknown_sub_{uuid.uuid4().hex[:8]}",
            "object": "event",
            "type": kind,
            "livemode": False,
            "data": {
                "object": {
                    "id": "sub_neverheardof",
                    "object": "subscription",
                    "customer": customer,
                    "status": "active",
                }
            },
        }
        assert send(quiet, evt) == 200
        row = stored(quiet, evt["id"])
        assert row is not None and row.status == "ignored"
    assert quiet.count(Subscription) == 0
    assert quiet.status(token).plan == "free"
