"""A renewal or an upgrade whose credit grant no longer fits the account's balance
(NUMERIC(38, 18): below 10^20) never wedges its event. No request creates them, so nothing
could refuse them up front, and their grant could never be written: `invoice.paid` or
`customer.subscription.updated` failed AMOUNT_INVALID on every attempt, and the events of the
subscription behind it waited. Now the event completes without the grant:

- a renewal's payment is refunded in full at Stripe (no refund reason: it is no duplicate),
  and `invoice.renewal_refunded` tells the company why (`CREDITS_NOT_STORABLE`, the credit
  type); the subscription goes on;
- an upgrade has no payment of its own to refund (its proration, if any, is billed on an
  invoice with other charges): `subscription.upgrade_not_granted` tells the company, and the
  subscription's new plan is recorded.

A replay of the event does nothing more (no second refund, no grant, no second notice).
Signed events from the sandbox through the sidecar; SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from billing.v1 import catalog_pb2, credit_pb2
from tests.checkout.support import World, events_of, signed_send
from tests.conftest import SERVICE_MD
from tests.webhooks.guards import failed_events, notices, refunds_of
from tollbooth.app import build_provider, webhook_handlers
from tollbooth.db.models import (
    CreditGrant,
    NotificationOutbox,
    Price,
    Subscription,
)
from tollbooth.errors import DomainError
from tollbooth.notifications import envelope

HUGE = "60000000000000000000"  # 6 x 10^19: one fits, two do not


def every(amount: str) -> list[catalog_pb2.CreditGrantSpec]:
    return [
        catalog_pb2.CreditGrantSpec(
            credit_type="tokens", amount=amount, on_purchase=True, on_renewal=True
        )
    ]


def send(world: World, event: dict[str, Any]) -> None:
    assert signed_send(world, json.dumps(event).encode()) == 200


def grants(world: World, account: str) -> int:
    return world.count(CreditGrant, CreditGrant.billing_account_id == account)


def subscribed(world: World, lookup_key: str) -> tuple[str, str, str]:
    """A new account's paid subscription to `lookup_key`, its events applied: (bearer token,
    account id, Stripe subscription id)."""
    token, account = world.token()
    stripe_id = world.buy(token, lookup_key).session.stripe_checkout_session_id
    world.pay(stripe_id)
    sub_id = str(world.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    for kind in ("customer.subscription.created", "checkout.session.completed"):
        for evt in events_of(world, kind, sub_id if "subscription" in kind else stripe_id):
            send(world, evt)
    return token, account, sub_id


def paid_by(world: World, invoice_id: str) -> str:
    """The PaymentIntent that paid an invoice, as the provider shows it."""
    raw = json.loads(world.stripe.raw_request("get", f"/v1/invoices/{invoice_id}").body)  # type: ignore[attr-defined]
    [payment] = [p for p in raw["payments"]["data"] if p["status"] == "paid"]
    return str(payment["payment"]["payment_intent"])


def test_a_renewal_whose_grant_no_longer_fits_is_refunded_and_its_event_completes(quiet: World):
    world = quiet
    world.price("pro", grants=every(HUGE))
    token, account, sub_id = subscribed(world, "pro")
    assert world.balance(account, "tokens") == HUGE
    world.advance(31)  # the renewal, paid at the provider: another HUGE would not fit
    renewal = str(world.stripe.v1.subscriptions.retrieve(sub_id).latest_invoice)
    assert world.stripe.v1.invoices.retrieve(renewal).billing_reason == "subscription_cycle"
    [paid] = events_of(world, "invoice.paid", renewal)
    send(world, paid)
    assert failed_events(world) == []
    assert world.balance(account, "tokens") == HUGE  # not granted: it could not be stored
    assert grants(world, account) == 1  # the purchase's only
    [notice] = notices(world, account, "invoice.renewal_refunded")
    intent = paid_by(world, renewal)
    assert (notice["stripe_invoice_id"], notice["refunded_payment_intent"]) == (renewal, intent)
    assert (notice["reason"], notice["credit_type"]) == ("CREDITS_NOT_STORABLE", "tokens")
    [refund] = refunds_of(world, intent)
    assert (refund["id"], refund["reason"]) == (notice["refund"], None)  # no duplicate
    with world.deps.db.transaction(readonly=True) as session:
        [row] = session.scalars(
            select(NotificationOutbox).where(
                NotificationOutbox.billing_account_id == account,
                NotificationOutbox.type == "invoice.renewal_refunded",
            )
        )
        sent = envelope.data(row)  # what the company's endpoint receives
    assert (sent["amount"], sent["currency"]) == ("29.00", "USD")  # the price's 2900 cents
    assert (sent["reason"], sent["creditType"], sent["refund"]) == (
        "CREDITS_NOT_STORABLE",
        "tokens",
        refund["id"],
    )
    charge = json.loads(world.stripe.raw_request("get", f"/v1/charges/{refund['charge']}").body)  # type: ignore[attr-defined]
    assert charge["refunded"] is True and charge["amount_refunded"] == charge["amount"]
    assert world.stripe.v1.subscriptions.retrieve(sub_id).status == "active"  # it goes on
    # Replayed, and the provider's own refund events: nothing more.
    send(world, paid)
    for evt in events_of(world, "charge.refunded", str(refund["charge"])):
        send(world, evt)
    assert failed_events(world) == []
    assert len(notices(world, account, "invoice.renewal_refunded")) == 1
    assert len(refunds_of(world, intent)) == 1
    assert world.balance(account, "tokens") == HUGE and grants(world, account) == 1


def test_a_renewal_that_stops_fitting_after_its_read_fails_and_its_retry_refunds(quiet: World):
    """The balance grows between the read phase (it fit: nothing refunded) and the apply
    phase: the apply fails CREDITS_NOT_STORABLE under the account's lock, nothing granted,
    and the event's next attempt refunds. Its two phases are run by hand for the first attempt
    (no provider call can be held between them); the retry is the real delivery."""
    world = quiet
    world.price("pro", grants=every("1"))
    token, account, sub_id = subscribed(world, "pro")
    world.advance(31)
    renewal = str(world.stripe.v1.subscriptions.retrieve(sub_id).latest_invoice)
    [paid] = events_of(world, "invoice.paid", renewal)
    intent = paid_by(world, renewal)
    handler, obj = webhook_handlers(build_provider(world.settings), world.deps.db).resolve(paid)
    facts = handler.read(obj)  # it fits: nothing refunded
    assert refunds_of(world, intent) == []
    almost = "99999999999999999998"  # with the purchase's 1: the largest whole balance
    world.credits.GrantCredits(
        credit_pb2.GrantCreditsRequest(
            account=account, credit_type="tokens", amount=almost, request_id="meanwhile"
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )
    full = world.balance(account, "tokens")
    with pytest.raises(DomainError) as err, world.deps.db.transaction() as session:
        handler.apply(session, str(paid["id"]), obj, facts)
    assert err.value.reason == "CREDITS_NOT_STORABLE"
    assert world.balance(account, "tokens") == full and grants(world, account) == 2
    send(world, paid)  # the event's next attempt
    assert failed_events(world) == []
    [refund] = refunds_of(world, intent)
    [notice] = notices(world, account, "invoice.renewal_refunded")
    assert (notice["refund"], notice["credit_type"]) == (refund["id"], "tokens")
    assert world.balance(account, "tokens") == full and grants(world, account) == 2


def test_an_upgrade_whose_grant_no_longer_fits_completes_without_it(quiet: World):
    world = quiet
    world.price("pro", grants=every("100"))
    world.price("team", grants=every(HUGE), amount=9900)
    world.buy(world.token()[0], "team")  # someone's checkout puts `team` at the provider
    with world.deps.db.transaction(readonly=True) as session:
        prices = {p.lookup_key: (p.id, p.stripe_price_id) for p in session.scalars(select(Price))}
    token, account, sub_id = subscribed(world, "pro")
    world.credits.GrantCredits(
        credit_pb2.GrantCreditsRequest(
            account=account, credit_type="tokens", amount=HUGE, request_id="big-grant"
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )
    before = world.balance(account, "tokens")
    item = world.stripe.v1.subscriptions.retrieve(sub_id)["items"]["data"][0]
    world.stripe.v1.subscriptions.update(
        sub_id, params={"items": [{"id": item["id"], "price": prices["team"][1]}]}
    )
    upgraded = events_of(world, "customer.subscription.updated", sub_id)[-1]  # the newest
    assert upgraded["data"]["previous_attributes"].get("items")
    send(world, upgraded)
    assert failed_events(world) == []
    assert world.balance(account, "tokens") == before  # the difference could not be stored
    assert grants(world, account) == 2  # the purchase's and the API's
    with world.deps.db.transaction(readonly=True) as session:
        row = session.scalars(
            select(Subscription).where(Subscription.stripe_subscription_id == sub_id)
        ).one()
        assert row.price_id == prices["team"][0]  # the change itself is recorded
    [notice] = notices(world, account, "subscription.upgrade_not_granted")
    assert (notice["stripe_subscription_id"], notice["price_id"]) == (sub_id, prices["team"][0])
    assert (notice["reason"], notice["credit_type"]) == ("CREDITS_NOT_STORABLE", "tokens")
    assert world.notifications(account).count("subscription.updated") == 1
    # Replayed: nothing more.
    send(world, upgraded)
    assert failed_events(world) == []
    assert len(notices(world, account, "subscription.upgrade_not_granted")) == 1
    assert world.balance(account, "tokens") == before and grants(world, account) == 2


def test_a_quantity_whose_grant_alone_is_past_the_cap_completes_without_it(quiet: World):
    """The new quantity times what the price grants per period is past the largest storable
    amount on its own (no balance could take it): the change is recorded, nothing granted, the
    company told (no amount: it has none that can be written)."""
    world = quiet
    world.price("seat", grants=every("10000000000000000000"))  # 10^19 per seat
    token, account, sub_id = subscribed(world, "seat")
    before = world.balance(account, "tokens")
    item = world.stripe.v1.subscriptions.retrieve(sub_id)["items"]["data"][0]
    world.stripe.v1.subscriptions.update(
        sub_id, params={"items": [{"id": item["id"], "quantity": 20}]}
    )
    changed = events_of(world, "customer.subscription.updated", sub_id)[-1]
    send(world, changed)
    assert failed_events(world) == []
    assert world.balance(account, "tokens") == before and grants(world, account) == 1
    with world.deps.db.transaction(readonly=True) as session:
        row = session.scalars(
            select(Subscription).where(Subscription.stripe_subscription_id == sub_id)
        ).one()
        assert row.quantity == 20
    [notice] = notices(world, account, "subscription.upgrade_not_granted")
    assert (notice["quantity"], notice["credit_type"], notice["amount"]) == (20, "tokens", None)
    send(world, changed)  # replayed: nothing more
    assert len(notices(world, account, "subscription.upgrade_not_granted")) == 1
