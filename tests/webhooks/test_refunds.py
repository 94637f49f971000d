"""Refunds (issue 14, finding 9): `charge.refunded`, read from the provider, voids what remains
of the grants that payment bought; the sandbox refunds and sends the event signed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from billing.v1 import catalog_pb2, credit_pb2
from tests.checkout.support import World, events_of, signed_send, start_world
from tests.conftest import SERVICE_MD
from tollbooth.db.models import CreditGrant, Purchase, StripeEvent
from tollbooth.db.types import utcnow

GRANTS = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="100", on_purchase=True)]


def bought(world: World) -> tuple[str, str]:
    """A paid, fulfilled `pro` purchase: (account, the PaymentIntent that paid it)."""
    world.price("pro", grants=GRANTS)
    token, account = world.token()
    stripe_id = world.buy(token, "pro").session.stripe_checkout_session_id
    world.pay(stripe_id)
    body = json.dumps(events_of(world, "checkout.session.completed", stripe_id)[0]).encode()
    assert signed_send(world, body) == 200
    sub = world.stripe.v1.subscriptions.retrieve(
        str(world.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    )
    invoice = world.stripe.v1.invoices.retrieve(str(sub.latest_invoice))
    return account, str(invoice.payments.data[0].payment.payment_intent)


def renewed(world: World) -> tuple[str, Any]:
    """A `pro` plan granting 100 on purchase and on every renewal, bought, paid and fulfilled,
    then renewed (31 days on, paid at the provider; its invoice.paid not yet sent to us):
    (account, the renewal's invoice)."""
    every = [
        catalog_pb2.CreditGrantSpec(
            credit_type="api_calls", amount="100", on_purchase=True, on_renewal=True
        )
    ]
    world.price("pro", grants=every)
    token, account = world.token()
    stripe_id = world.buy(token, "pro").session.stripe_checkout_session_id
    world.pay(stripe_id)
    body = json.dumps(events_of(world, "checkout.session.completed", stripe_id)[0]).encode()
    assert signed_send(world, body) == 200
    sub_id = str(world.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    world.advance(31)  # the renewal, paid
    renewal = world.stripe.v1.invoices.retrieve(
        str(world.stripe.v1.subscriptions.retrieve(sub_id).latest_invoice)
    )
    assert renewal.billing_reason == "subscription_cycle"
    return account, renewal


def refunded_event(world: World, intent: str) -> dict:  # type: ignore[type-arg]
    charge = str(world.stripe.v1.payment_intents.retrieve(intent).latest_charge)
    return events_of(world, "charge.refunded", charge)[-1]


def test_a_full_refund_voids_what_remains_of_the_grants_that_payment_bought(quiet: World):
    account, intent = bought(quiet)
    quiet.credits.DebitCredits(
        credit_pb2.DebitCreditsRequest(
            account=account, credit_type="api_calls", amount="30", request_id=uuid.uuid4().hex
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )
    quiet.stripe.v1.refunds.create(params={"payment_intent": intent})
    evt = refunded_event(quiet, intent)
    assert signed_send(quiet, json.dumps(evt).encode()) == 200
    assert quiet.balance(account, "api_calls") == "0"
    assert quiet.count(CreditGrant, CreditGrant.state == "voided") == 1
    assert "credits.voided" in quiet.notifications(account)
    twin = {**evt, "id": evt["id"] + "_twin"}
    assert signed_send(quiet, json.dumps(twin).encode()) == 200  # once per charge
    assert quiet.notifications(account).count("credits.voided") == 1


def test_a_partial_refund_keeps_the_grants(quiet: World):
    account, intent = bought(quiet)
    quiet.stripe.v1.refunds.create(params={"payment_intent": intent, "amount": 100})
    evt = refunded_event(quiet, intent)
    assert signed_send(quiet, json.dumps(evt).encode()) == 200
    assert quiet.balance(account, "api_calls") == "100"
    with quiet.deps.db.transaction(readonly=True) as session:
        row = session.get(StripeEvent, evt["id"])
        assert row is not None and row.status == "ignored"
        assert row.last_error is not None and "not fully refunded" in row.last_error


def test_an_upgrade_grants_the_new_plans_difference_at_once_and_once(quiet: World):
    from sqlalchemy import select

    from tollbooth.db.models import Price

    team_grants = [
        catalog_pb2.CreditGrantSpec(
            credit_type="api_calls", amount="300", on_purchase=True, on_renewal=True
        )
    ]
    pro_grants = [
        catalog_pb2.CreditGrantSpec(
            credit_type="api_calls", amount="100", on_purchase=True, on_renewal=True
        )
    ]
    quiet.price("pro", grants=pro_grants)
    quiet.price("team", grants=team_grants, amount=9900)
    token, account = quiet.token()
    stripe_id = quiet.buy(token, "pro").session.stripe_checkout_session_id
    quiet.pay(stripe_id)
    body = json.dumps(events_of(quiet, "checkout.session.completed", stripe_id)[0]).encode()
    assert signed_send(quiet, body) == 200
    assert quiet.balance(account, "api_calls") == "100"
    quiet.buy(quiet.token()[0], "team")  # someone's checkout puts `team` at the provider
    with quiet.deps.db.transaction(readonly=True) as session:
        prices = {p.lookup_key: p.stripe_price_id for p in session.scalars(select(Price))}
    sub_id = str(quiet.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    item = quiet.stripe.v1.subscriptions.retrieve(sub_id)["items"]["data"][0]
    quiet.stripe.v1.subscriptions.update(
        sub_id, params={"items": [{"id": item["id"], "price": prices["team"]}]}
    )
    upgraded = events_of(quiet, "customer.subscription.updated", sub_id)[-1]
    assert signed_send(quiet, json.dumps(upgraded).encode()) == 200
    assert quiet.balance(account, "api_calls") == "300"  # 100 + (300 - 100), at once
    assert signed_send(quiet, json.dumps({**upgraded, "id": upgraded["id"] + "_t"}).encode()) == 200
    assert quiet.balance(account, "api_calls") == "300"
    quiet.stripe.v1.subscriptions.update(
        sub_id, params={"items": [{"id": item["id"], "price": prices["pro"]}]}
    )
    downgraded = events_of(quiet, "customer.subscription.updated", sub_id)[-1]
    assert signed_send(quiet, json.dumps(downgraded).encode()) == 200
    assert quiet.balance(account, "api_calls") == "300"  # a downgrade takes nothing back


def test_a_plans_grant_expiry_counts_from_the_billing_period_not_from_processing(quiet: World):
    import datetime as dt
    import time

    from sqlalchemy import select

    quiet.price(
        "pro",
        grants=[
            catalog_pb2.CreditGrantSpec(
                credit_type="api_calls",
                amount="100",
                on_purchase=True,
                on_renewal=True,
                expires_after_seconds=86_400,
            )
        ],
    )
    token, account = quiet.token()
    stripe_id = quiet.buy(token, "pro").session.stripe_checkout_session_id
    quiet.pay(stripe_id)
    time.sleep(1.1)  # the event is processed a while after the period began
    body = json.dumps(events_of(quiet, "checkout.session.completed", stripe_id)[0]).encode()
    assert signed_send(quiet, body) == 200
    sub = quiet.stripe.v1.subscriptions.retrieve(
        str(quiet.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    )
    start = sub["items"]["data"][0]["current_period_start"]
    with quiet.deps.db.transaction(readonly=True) as session:
        grant = session.scalars(
            select(CreditGrant).where(CreditGrant.billing_account_id == account)
        ).one()
        assert grant.expire_at == dt.datetime.fromtimestamp(start + 86_400, dt.UTC)


def test_a_full_refund_of_a_renewal_voids_what_remains_of_that_renewal_s_grants(quiet: World):
    account, renewal = renewed(quiet)
    paid = events_of(quiet, "invoice.paid", str(renewal.id))[-1]
    assert signed_send(quiet, json.dumps(paid).encode()) == 200
    assert quiet.balance(account, "api_calls") == "200"
    quiet.credits.DebitCredits(
        credit_pb2.DebitCreditsRequest(
            account=account, credit_type="api_calls", amount="30", request_id=uuid.uuid4().hex
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )
    intent = str(renewal.payments.data[0].payment.payment_intent)
    quiet.stripe.v1.refunds.create(params={"payment_intent": intent})
    evt = refunded_event(quiet, intent)
    assert signed_send(quiet, json.dumps(evt).encode()) == 200
    # The purchase's grant is spent first (soonest expiry, then oldest: 70 left of it); the
    # renewal's 100, bought by the refunded payment, is voided; the purchase's grant stays.
    assert quiet.balance(account, "api_calls") == "70"
    assert quiet.notifications(account).count("credits.voided") == 1
    twin = {**evt, "id": evt["id"] + "_twin"}
    assert signed_send(quiet, json.dumps(twin).encode()) == 200
    assert quiet.balance(account, "api_calls") == "70"


def _lifetime_paid(world: World) -> tuple[str, str, str]:
    """A one-time `lifetime` price granting feature `lifetime-sso` and 50 credits, bought and
    paid at the provider, its checkout.session.completed not yet sent to us: (account, bearer
    token, the checkout session's provider id)."""
    world.price(
        "lifetime",
        recurring=False,
        amount=4900,
        grants=[
            catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="50", on_purchase=True)
        ],
        entitlements=[catalog_pb2.Entitlement(feature="lifetime-sso")],
    )
    token, account = world.token()
    stripe_id = world.buy(token, "lifetime").session.stripe_checkout_session_id
    world.pay(stripe_id)
    return account, token, stripe_id


def _lifetime(world: World) -> tuple[str, str, str]:
    """`_lifetime_paid`, fulfilled: (account, bearer token, the PaymentIntent that paid it)."""
    account, token, stripe_id = _lifetime_paid(world)
    body = json.dumps(events_of(world, "checkout.session.completed", stripe_id)[0]).encode()
    assert signed_send(world, body) == 200
    intent = str(world.stripe.v1.checkout.sessions.retrieve(stripe_id).payment_intent)
    return account, token, intent


def _allowed(world: World, account: str) -> bool:
    from billing.v1 import entitlement_pb2, entitlement_pb2_grpc

    return (
        entitlement_pb2_grpc.EntitlementServiceStub(world.channel)
        .CheckEntitlement(
            entitlement_pb2.CheckEntitlementRequest(account=account, feature="lifetime-sso"),
            metadata=SERVICE_MD,
            timeout=10,
        )
        .allowed
    )


def test_a_full_refund_of_a_one_time_purchase_ends_what_it_entitles(quiet: World):
    account, _, intent = _lifetime(quiet)
    assert _allowed(quiet, account) is True
    assert quiet.balance(account, "api_calls") == "50"
    quiet.stripe.v1.refunds.create(params={"payment_intent": intent})
    evt = refunded_event(quiet, intent)
    assert signed_send(quiet, json.dumps(evt).encode()) == 200
    assert quiet.balance(account, "api_calls") == "0"
    assert _allowed(quiet, account) is False  # the money went back: the feature goes too
    twin = {**evt, "id": evt["id"] + "_twin"}
    assert signed_send(quiet, json.dumps(twin).encode()) == 200
    assert _allowed(quiet, account) is False
    assert quiet.notifications(account).count("credits.voided") == 1


def test_a_partial_refund_of_a_one_time_purchase_keeps_what_it_entitles(quiet: World):
    account, _, intent = _lifetime(quiet)
    quiet.stripe.v1.refunds.create(params={"payment_intent": intent, "amount": 100})
    evt = refunded_event(quiet, intent)
    assert signed_send(quiet, json.dumps(evt).encode()) == 200
    assert _allowed(quiet, account) is True
    assert quiet.balance(account, "api_calls") == "50"


def _flips(world: World, bought: int) -> tuple[str, Callable[[int], str]]:
    """`pro` (100 credits per period and unit) bought with quantity `bought` and fulfilled: the
    account, and a function that changes the quantity at the provider, delivers the
    subscription's update, and answers the balance."""
    every = [
        catalog_pb2.CreditGrantSpec(
            credit_type="api_calls", amount="100", on_purchase=True, on_renewal=True
        )
    ]
    world.price("pro", grants=every)
    token, account = world.token()
    stripe_id = world.buy(token, "pro", quantity=bought).session.stripe_checkout_session_id
    world.pay(stripe_id)
    body = json.dumps(events_of(world, "checkout.session.completed", stripe_id)[0]).encode()
    assert signed_send(world, body) == 200
    sub_id = str(world.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    item = world.stripe.v1.subscriptions.retrieve(sub_id)["items"]["data"][0]

    def to(quantity: int) -> str:
        world.stripe.v1.subscriptions.update(
            sub_id, params={"items": [{"id": item["id"], "quantity": quantity}]}
        )
        updated = events_of(world, "customer.subscription.updated", sub_id)[-1]
        assert signed_send(world, json.dumps(updated).encode()) == 200
        return world.balance(account, "api_calls")

    return account, to


def test_quantity_flips_within_a_period_never_grant_beyond_the_highest_level_reached(
    quiet: World,
):
    """1 -> 3 grants the difference (200); back to 1 takes nothing; 1 -> 2 then grants nothing
    (the period already had 300's worth), and 1 -> 4 grants only what 4 adds beyond 3."""
    account, to = _flips(quiet, 1)
    assert quiet.balance(account, "api_calls") == "100"
    assert to(3) == "300"
    assert to(1) == "300"
    assert to(2) == "300"  # 2 is below the 3 this period already granted
    assert to(1) == "300"
    assert to(4) == "400"  # only what 4 adds beyond 3


def test_going_down_then_back_up_within_a_period_grants_nothing_it_already_had(quiet: World):
    """Bought with quantity 3 (300 for the period): 3 -> 1 -> 3 grants nothing more; 4 grants
    only the fourth unit's 100."""
    account, to = _flips(quiet, 3)
    assert quiet.balance(account, "api_calls") == "300"
    assert to(1) == "300"
    assert to(3) == "300"
    assert to(2) == "300"
    assert to(4) == "400"


def test_a_refund_delivered_before_the_purchase_s_fulfilment_still_ends_what_it_bought(
    quiet: World,
):
    """Delivery order is not guaranteed: the full refund's charge.refunded may be applied
    before checkout.session.completed. The purchase, when it is fulfilled, is refunded then."""
    account, token, stripe_id = _lifetime_paid(quiet)
    intent = str(quiet.stripe.v1.checkout.sessions.retrieve(stripe_id).payment_intent)
    quiet.stripe.v1.refunds.create(params={"payment_intent": intent})
    refunded = refunded_event(quiet, intent)
    assert signed_send(quiet, json.dumps(refunded).encode()) == 200  # first
    between = utcnow()
    completed = events_of(quiet, "checkout.session.completed", stripe_id)[0]
    assert signed_send(quiet, json.dumps(completed).encode()) == 200  # then
    assert quiet.balance(account, "api_calls") == "0"
    with quiet.deps.db.transaction(readonly=True) as session:
        purchase = session.scalars(
            select(Purchase).where(Purchase.billing_account_id == account)
        ).one()
    # Its refund time is the refund's, applied before the fulfilment recorded the purchase.
    assert purchase.refunded_at is not None
    assert purchase.refunded_at <= between < purchase.created_at
    assert _allowed(quiet, account) is False
    assert quiet.notifications(account).count("credits.voided") == 1
    for body in (refunded, completed):  # redeliveries change nothing
        assert signed_send(quiet, json.dumps(body).encode()) == 200
    assert quiet.balance(account, "api_calls") == "0"
    assert quiet.notifications(account).count("credits.voided") == 1


def test_quantity_changes_across_a_period_boundary_grant_again_in_the_new_period(quiet: World):
    """Bought at 3, down to 1: the renewal grants 1 unit's 100 for the new period; going back
    to 3 in the new period grants the 200 that period lacks (the old period's level is no
    floor for the new one); 3 -> 1 -> 3 again in the same new period grants nothing more."""
    account, to = _flips(quiet, 3)
    assert to(1) == "300"
    with quiet.deps.db.transaction(readonly=True) as session:
        from sqlalchemy import select

        from tollbooth.db.models import Subscription

        sub_id = session.scalars(select(Subscription.stripe_subscription_id)).one()
    quiet.advance(31)  # the renewal of quantity 1, paid
    renewal = str(quiet.stripe.v1.subscriptions.retrieve(sub_id).latest_invoice)
    paid = events_of(quiet, "invoice.paid", renewal)[-1]
    assert signed_send(quiet, json.dumps(paid).encode()) == 200
    assert quiet.balance(account, "api_calls") == "400"
    assert to(3) == "600"
    assert to(1) == "600"
    assert to(3) == "600"


def test_a_renewal_whose_invoice_read_fails_is_retried_granted_once_and_refundable(
    tmp_path,  # type: ignore[no-untyped-def]
    database_url: str,
):
    """invoice.paid for a renewal while the provider answers 5xx on the invoice: its application
    fails and is retried; the retries grant once, recording the renewal's payment, so its full
    refund still voids the renewal's grants."""
    world = start_world(database_url, tmp_path, deliver=False, STRIPE_MAX_NETWORK_RETRIES="0")
    try:
        account, invoice = renewed(world)
        renewal = str(invoice.id)
        paid = json.dumps(events_of(world, "invoice.paid", renewal)[-1]).encode()
        world.sandbox.stalls.add("GET", f"/v1/invoices/{renewal}", seconds=0, status=503)
        assert signed_send(world, paid) == 200  # stored; its application is retried
        assert signed_send(world, paid) == 200  # Stripe's retry
        assert signed_send(world, paid) == 200
        assert world.balance(account, "api_calls") == "200"
        intent = str(
            world.stripe.v1.invoices.retrieve(renewal).payments.data[0].payment.payment_intent
        )
        world.stripe.v1.refunds.create(params={"payment_intent": intent})
        assert signed_send(world, json.dumps(refunded_event(world, intent)).encode()) == 200
        assert world.balance(account, "api_calls") == "100"
    finally:
        world.stop()


def test_two_partial_refunds_summing_to_the_whole_end_the_purchase_once(quiet: World):
    """The first partial refund keeps everything; the second, completing it, ends the purchase
    and voids its credits; both events delivered again (in either order) change nothing."""
    account, _, intent = _lifetime(quiet)
    quiet.stripe.v1.refunds.create(params={"payment_intent": intent, "amount": 1900})
    first = refunded_event(quiet, intent)
    assert signed_send(quiet, json.dumps(first).encode()) == 200
    assert _allowed(quiet, account) is True
    assert quiet.balance(account, "api_calls") == "50"
    quiet.stripe.v1.refunds.create(params={"payment_intent": intent, "amount": 3000})
    second = refunded_event(quiet, intent)
    assert second["id"] != first["id"]
    assert signed_send(quiet, json.dumps(second).encode()) == 200
    assert _allowed(quiet, account) is False
    assert quiet.balance(account, "api_calls") == "0"
    for evt in (first, second, {**first, "id": first["id"] + "_late"}):
        assert signed_send(quiet, json.dumps(evt).encode()) == 200
    assert quiet.notifications(account).count("credits.voided") == 1


def test_a_renewal_refunded_before_its_invoice_paid_is_applied_grants_nothing_that_stays(
    quiet: World,
):
    """charge.refunded for a renewal's payment delivered before that renewal's invoice.paid:
    the renewal, when applied, voids its grant at once; redeliveries change nothing."""
    account, renewal = renewed(quiet)
    intent = str(renewal.payments.data[0].payment.payment_intent)
    quiet.stripe.v1.refunds.create(params={"payment_intent": intent})
    refunded = refunded_event(quiet, intent)
    paid = events_of(quiet, "invoice.paid", str(renewal.id))[-1]
    assert signed_send(quiet, json.dumps(refunded).encode()) == 200  # first
    assert signed_send(quiet, json.dumps(paid).encode()) == 200  # then
    assert quiet.balance(account, "api_calls") == "100"  # the purchase's grant only
    assert quiet.notifications(account).count("credits.voided") == 1
    for evt in (paid, refunded, {**paid, "id": paid["id"] + "_twin"}):
        assert signed_send(quiet, json.dumps(evt).encode()) == 200
    assert quiet.balance(account, "api_calls") == "100"
    assert quiet.notifications(account).count("credits.voided") == 1
