"""Disputes: `charge.dispute.closed` as lost ends what the payment bought exactly as a full
refund does, once per charge whatever arrives first (the refund, either dispute event, twins);
won or open changes no credits. The sandbox opens and closes disputes and sends the events
signed; each event queues its outbound notification."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from billing.v1 import credit_pb2
from tests.checkout.support import World, events_of, signed_send
from tests.conftest import SERVICE_MD
from tests.webhooks.test_refunds import bought
from tollbooth.db.models import CreditGrant, StripeEvent


def _charge(world: World, intent: str) -> str:
    return str(world.stripe.v1.payment_intents.retrieve(intent).latest_charge)


def _open(world: World, charge: str) -> dict[str, Any]:
    response = world.stripe.raw_request("post", f"/v1/test_helpers/charges/{charge}/dispute")
    return json.loads(response.body)  # type: ignore[attr-defined,no-any-return]


def _close(world: World, dispute: str, status: str) -> dict[str, Any]:
    response = world.stripe.raw_request(
        "post", f"/v1/test_helpers/disputes/{dispute}/close", status=status
    )
    return json.loads(response.body)  # type: ignore[attr-defined,no-any-return]


def _send(world: World, event: dict[str, Any], suffix: str = "") -> None:
    body = {**event, "id": event["id"] + suffix} if suffix else event
    assert signed_send(world, json.dumps(body).encode()) == 200


def _spend(world: World, account: str, amount: str) -> None:
    world.credits.DebitCredits(
        credit_pb2.DebitCreditsRequest(
            account=account, credit_type="api_calls", amount=amount, request_id=uuid.uuid4().hex
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )


def _disputed(
    world: World, status: str, refund_first: bool = False
) -> tuple[str, str, str, dict[str, Any], dict[str, Any]]:
    """A paid `pro` purchase (100 credits, 30 spent) whose charge is disputed (after a full
    refund: a cardholder can dispute a refunded charge), then closed as `status`: (account,
    payment intent, charge, created event, closed event)."""
    account, intent = bought(world)
    _spend(world, account, "30")
    charge = _charge(world, intent)
    if refund_first:
        world.stripe.v1.refunds.create(params={"charge": charge})
    dispute = _open(world, charge)
    assert dispute["object"] == "dispute" and dispute["status"] == "needs_response"
    created = events_of(world, "charge.dispute.created", dispute["id"])[-1]
    assert _close(world, dispute["id"], status)["status"] == status
    closed = events_of(world, "charge.dispute.closed", dispute["id"])[-1]
    return account, intent, charge, created, closed


def test_a_lost_dispute_voids_what_remains_of_the_grants_like_a_full_refund(quiet: World):
    account, _, _, created, closed = _disputed(quiet, "lost")
    _send(quiet, created)
    _send(quiet, closed)
    assert quiet.balance(account, "api_calls") == "0"
    assert quiet.count(CreditGrant, CreditGrant.state == "voided") == 1
    kinds = quiet.notifications(account)
    assert kinds.count("credits.voided") == 1
    assert kinds.count("charge.dispute.created") == 1
    assert kinds.count("charge.dispute.closed") == 1
    _send(quiet, closed)  # a redelivery
    _send(quiet, closed, "_twin")  # a second event for the same change
    _send(quiet, created, "_twin")
    assert quiet.notifications(account).count("credits.voided") == 1
    assert quiet.notifications(account).count("charge.dispute.closed") == 1


def test_a_won_dispute_changes_no_credits(quiet: World):
    account, _, _, created, closed = _disputed(quiet, "won")
    _send(quiet, created)
    _send(quiet, closed)
    assert quiet.balance(account, "api_calls") == "70"
    assert quiet.count(CreditGrant, CreditGrant.state == "voided") == 0
    assert "charge.dispute.closed" in quiet.notifications(account)


def test_an_open_dispute_changes_no_credits(quiet: World):
    account, intent = bought(quiet)
    dispute = _open(quiet, _charge(quiet, intent))
    _send(quiet, events_of(quiet, "charge.dispute.created", dispute["id"])[-1])
    assert quiet.balance(account, "api_calls") == "100"
    assert "charge.dispute.created" in quiet.notifications(account)


def test_a_closed_event_whose_body_says_lost_is_read_from_the_provider(quiet: World):
    account, _, _, created, closed = _disputed(quiet, "won")
    forged = json.loads(json.dumps(closed))
    forged["data"]["object"]["status"] = "lost"
    _send(quiet, forged, "_forged")
    assert quiet.balance(account, "api_calls") == "70"


@pytest.mark.parametrize("order", ["refund_first", "dispute_first", "interleaved"])
def test_a_lost_dispute_and_a_full_refund_of_one_charge_void_once(quiet: World, order: str):
    account, intent, charge, created, closed = _disputed(quiet, "lost", refund_first=True)
    refunded = events_of(quiet, "charge.refunded", charge)[-1]
    sequences = {
        "refund_first": [refunded, closed, created, refunded, closed],
        "dispute_first": [closed, created, refunded, closed, refunded],
        "interleaved": [created, refunded, created, closed, refunded],
    }
    for n, event in enumerate(sequences[order]):
        _send(quiet, event, f"_{n}" if n % 2 else "")
    assert quiet.balance(account, "api_calls") == "0"
    assert quiet.count(CreditGrant, CreditGrant.state == "voided") == 1
    assert quiet.notifications(account).count("credits.voided") == 1


def test_a_lost_dispute_before_the_fulfilment_ends_the_purchase_when_it_is_recorded(
    quiet: World,
):
    from tests.checkout.support import events_of as events
    from tests.webhooks.test_refunds import GRANTS

    quiet.price("pro", grants=GRANTS)
    token, account = quiet.token()
    stripe_id = quiet.buy(token, "pro").session.stripe_checkout_session_id
    quiet.pay(stripe_id)
    sub = quiet.stripe.v1.subscriptions.retrieve(
        str(quiet.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    )
    invoice = quiet.stripe.v1.invoices.retrieve(str(sub.latest_invoice))
    intent = str(invoice.payments.data[0].payment.payment_intent)
    dispute = _open(quiet, _charge(quiet, intent))
    _close(quiet, dispute["id"], "lost")
    _send(quiet, events(quiet, "charge.dispute.closed", dispute["id"])[-1])
    _send(quiet, events(quiet, "checkout.session.completed", stripe_id)[0])
    assert quiet.balance(account, "api_calls") == "0"


def test_a_dispute_of_a_charge_not_ours_is_ignored(quiet: World):
    account, intent = bought(quiet)
    dispute = _open(quiet, _charge(quiet, intent))
    event = events_of(quiet, "charge.dispute.created", dispute["id"])[-1]
    unknown = json.loads(json.dumps(event))
    unknown["id"] += "_unknown"
    unknown["data"]["object"]["id"] = "dp_notknowntotheprovider"
    _send(quiet, unknown)
    with quiet.deps.db.transaction(readonly=True) as session:
        row = session.get(StripeEvent, unknown["id"])
        assert row is not None and row.status == "ignored"
    assert quiet.balance(account, "api_calls") == "100"


def test_the_dispute_notifications_carry_the_provider_s_dispute(quiet: World):
    from sqlalchemy import select

    from tollbooth.db.models import NotificationOutbox
    from tollbooth.notifications import envelope

    account, intent, charge, created, closed = _disputed(quiet, "lost")
    _send(quiet, closed)
    with quiet.deps.db.transaction(readonly=True) as session:
        row = session.scalars(
            select(NotificationOutbox).where(
                NotificationOutbox.billing_account_id == account,
                NotificationOutbox.type == "charge.dispute.closed",
            )
        ).one()
        sent = envelope.envelope(row)
    dispute = closed["data"]["object"]
    assert sent["type"] == "charge.dispute.closed"
    assert sent["data"]["accountId"] == account
    assert (sent["data"]["disputeId"], sent["data"]["charge"]) == (dispute["id"], charge)
    assert (sent["data"]["paymentIntent"], sent["data"]["status"]) == (intent, "lost")
    assert sent["data"]["amount"] == envelope.major_units(dispute["amount"], "usd")
    assert sent["data"]["currency"] == "USD"
    assert "charge.dispute.closed" in envelope.KNOWN_TYPES


def test_a_lost_dispute_delivered_by_the_sandbox_itself_voids_the_grants(world: World):
    """The real path end to end: the sandbox signs and delivers every event to the sidecar."""
    from tests.webhooks.test_refunds import GRANTS

    world.price("plus", grants=GRANTS)
    token, account = world.token()
    stripe_id = world.buy(token, "plus").session.stripe_checkout_session_id
    world.pay(stripe_id)
    world.settled()
    assert world.balance(account, "api_calls") == "100"
    sub = world.stripe.v1.subscriptions.retrieve(
        str(world.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    )
    invoice = world.stripe.v1.invoices.retrieve(str(sub.latest_invoice))
    intent = str(invoice.payments.data[0].payment.payment_intent)
    dispute = _open(world, _charge(world, intent))
    world.settled()
    assert world.balance(account, "api_calls") == "100"  # open: nothing changes
    world.stripe.v1.disputes.close(dispute["id"])  # accepted: lost
    world.settled()
    assert world.balance(account, "api_calls") == "0"
    assert world.notifications(account).count("credits.voided") == 1


def test_concurrent_deliveries_of_a_refund_and_a_lost_dispute_void_once(pg_world: World):
    from concurrent.futures import ThreadPoolExecutor

    account, intent, charge, created, closed = _disputed(pg_world, "lost", refund_first=True)
    refunded = events_of(pg_world, "charge.refunded", charge)[-1]
    bodies = [
        json.dumps({**e, "id": f"{e['id']}_{n}"}).encode()
        for n in range(3)
        for e in (refunded, closed, created)
    ]
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda b: signed_send(pg_world, b), bodies))
    assert answers == [200] * len(bodies)
    assert pg_world.balance(account, "api_calls") == "0"
    assert pg_world.count(CreditGrant, CreditGrant.state == "voided") == 1
    assert pg_world.notifications(account).count("credits.voided") == 1
