"""PaymentService through real stubs, paid in the sandbox, finalised by its signed webhooks."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from sqlalchemy import select, update

from billing.v1 import catalog_pb2, checkout_pb2, payment_pb2, webhook_pb2, webhook_pb2_grpc
from tests.checkout.support import World, events_of, signed_send, start_world, wait_for
from tests.conftest import SERVICE_MD, WEBHOOK_SECRET, bearer_md
from tests.helpers import error_field, error_reason
from tests.payments.support import (
    SEED_BODY,
    confirm,
    create,
    get,
    inbox_status,
    one_time_pack,
    purchases,
    rpc_error,
    stub,
    token,
)
from tollbooth.db.models import BillingEffect, CreditGrant, Price
from tollbooth.db.payment_intents import PaymentIntent
from tollbooth.webhooks.signature import header

SUCCEEDED = payment_pb2.PAYMENT_INTENT_STATUS_SUCCEEDED


def test_seed_003s_body_answers_a_client_secret_and_the_test_card_records_one_purchase(
    world: World,
):
    bearer, account = token(world)
    intent = create(world, bearer)
    assert intent.payment_intent_id.startswith("pay_")
    assert intent.stripe_payment_intent_id.startswith("pi_")
    assert intent.client_secret.startswith(intent.stripe_payment_intent_id + "_secret_")
    assert intent.status == payment_pb2.PAYMENT_INTENT_STATUS_REQUIRES_PAYMENT_METHOD
    assert (intent.amount, intent.currency) == (2999, "usd")
    assert intent.receipt_email == "customer@example.com"
    assert purchases(world, account) == []  # nothing before the payment

    remote = world.stripe.v1.payment_intents.retrieve(intent.stripe_payment_intent_id)
    assert (remote.amount, remote.currency, remote.description) == (
        2999,
        "usd",
        "Purchase from YourApp",
    )
    assert remote.metadata["tollbooth_payment_intent_id"] == intent.payment_intent_id

    assert confirm(world, intent.stripe_payment_intent_id)["status"] == "succeeded"
    world.settled()
    got = get(world, bearer, intent.payment_intent_id)
    assert got.status == SUCCEEDED and got.succeed_time.seconds > 0
    bought = purchases(world, account)
    assert [(p.payment_intent_id, p.amount_total, p.currency, p.price_id) for p in bought] == [
        (intent.payment_intent_id, 2999, "usd", None)
    ]
    assert got.purchase_id == bought[0].id
    # The provider's id finds it too, and ListPurchases names the intent.
    assert get(world, bearer, intent.stripe_payment_intent_id).payment_intent_id == (
        intent.payment_intent_id
    )
    listed = world.checkout.ListPurchases(
        checkout_pb2.ListPurchasesRequest(), metadata=bearer_md(bearer), timeout=10
    ).purchases
    assert [(p.payment_intent_id, p.checkout_session_id) for p in listed] == [
        (intent.payment_intent_id, "")
    ]
    assert world.count(CreditGrant, CreditGrant.billing_account_id == account) == 0
    assert "payment_intent.succeeded" in world.notifications(account)


def test_a_named_one_time_price_is_bought_and_granted_once_even_when_delivered_again(
    world: World,
):
    price_id = one_time_pack(world, "pack-250")
    bearer, account = token(world)
    intent = create(world, bearer, amount=0, currency="", catalog_price_id=price_id)
    assert (intent.amount, intent.currency, intent.catalog_price_id) == (1500, "usd", price_id)
    confirm(world, intent.stripe_payment_intent_id)
    world.settled()
    assert world.balance(account, "pack_calls") == "250"
    bought = purchases(world, account)
    assert [(p.price_id, p.amount_total) for p in bought] == [(price_id, 1500)]
    # Stripe delivers again, and sends a second event for the same payment.
    event = events_of(world, "payment_intent.succeeded", intent.stripe_payment_intent_id)[0]
    twin = {**event, "id": event["id"] + "_twin"}
    for body in (event, twin, event):
        assert signed_send(world, json.dumps(body).encode()) == 200
    assert world.balance(account, "pack_calls") == "250"
    assert len(purchases(world, account)) == 1
    assert world.count(CreditGrant, CreditGrant.billing_account_id == account) == 1
    key = f"payment_intent:{intent.stripe_payment_intent_id}"
    assert world.count(BillingEffect, BillingEffect.key == key) == 1
    assert world.notifications(account).count("payment_intent.succeeded") == 1
    # Both events were applied (the second as a no-op), none failed on a constraint.
    assert [inbox_status(world, e["id"])[0] for e in (event, twin)] == ["applied", "applied"]
    assert get(world, bearer, intent.payment_intent_id).status == SUCCEEDED


def test_a_declined_card_records_the_failure_and_a_late_failure_never_undoes_a_success(
    world: World,
):
    price_id = one_time_pack(world, "pack-decline")
    bearer, account = token(world)
    intent = create(world, bearer, amount=1500, currency="usd", catalog_price_id=price_id)
    with pytest.raises(Exception, match="declined"):
        confirm(world, intent.stripe_payment_intent_id, "pm_card_chargeDeclined")
    world.settled()
    failed = get(world, bearer, intent.payment_intent_id)
    assert failed.status == payment_pb2.PAYMENT_INTENT_STATUS_REQUIRES_PAYMENT_METHOD
    assert (failed.failure_code, failed.decline_code) == ("card_declined", "generic_decline")
    assert failed.failure_message and failed.failure_time.seconds > 0
    assert purchases(world, account) == []
    assert world.count(CreditGrant, CreditGrant.billing_account_id == account) == 0
    assert "payment_intent.payment_failed" in world.notifications(account)

    confirm(world, intent.stripe_payment_intent_id)  # a good card next
    world.settled()
    assert get(world, bearer, intent.payment_intent_id).status == SUCCEEDED
    # The failure's event delivered again, late (after the success): nothing moves back.
    late = events_of(world, "payment_intent.payment_failed", intent.stripe_payment_intent_id)[0]
    assert signed_send(world, json.dumps({**late, "id": late["id"] + "_late"}).encode()) == 200
    assert get(world, bearer, intent.payment_intent_id).status == SUCCEEDED
    assert len(purchases(world, account)) == 1
    assert world.balance(account, "pack_calls") == "250"


def test_bad_input_is_400_with_its_reason_and_creates_nothing(world: World):
    recurring = world.price("monthly-plan").price_id
    pack = one_time_pack(world, "pack-bad", amount=1500)
    bearer, _ = token(world)
    cases = [
        ({"amount": 0}, "PAYMENT_AMOUNT_INVALID"),
        ({"amount": -5}, "PAYMENT_AMOUNT_INVALID"),
        ({"amount": 100_000_000}, "PAYMENT_AMOUNT_INVALID"),
        # Under the provider's minimum charge (usd 50 cents, gbp 30 pence, jpy 50 yen).
        ({"amount": 49, "currency": "usd"}, "PAYMENT_AMOUNT_INVALID"),
        ({"amount": 29, "currency": "gbp"}, "PAYMENT_AMOUNT_INVALID"),
        ({"amount": 49, "currency": "jpy"}, "PAYMENT_AMOUNT_INVALID"),
        ({"currency": "XYZ"}, "CURRENCY_INVALID"),
        ({"currency": "us"}, "CURRENCY_INVALID"),
        ({"currency": "zzz"}, "CURRENCY_INVALID"),
        ({"currency": ""}, "FIELD_REQUIRED"),
        ({"receipt_email": "not-an-email"}, "EMAIL_INVALID"),
        ({"receipt_email": "a b@example.com"}, "EMAIL_INVALID"),
        # A control character is refused at the edge, as in every field (FIELD_INVALID); an
        # invisible format character is no part of an address either.
        ({"receipt_email": "a@example.com\r\nBcc: b@example.com"}, "FIELD_INVALID"),
        ({"receipt_email": "a\x07b@example.com"}, "FIELD_INVALID"),
        ({"receipt_email": "a\u200bb@example.com"}, "EMAIL_INVALID"),
        ({"catalog_price_id": recurring, "amount": 0, "currency": ""}, "PRICE_NOT_ONE_TIME"),
        ({"catalog_price_id": "price_nope"}, "PRICE_NOT_FOUND"),
        ({"catalog_price_id": pack, "amount": 1}, "PAYMENT_AMOUNT_MISMATCH"),
        ({"catalog_price_id": pack, "amount": 1500, "currency": "eur"}, "PAYMENT_AMOUNT_MISMATCH"),
        # A malformed currency is that, even beside a price.
        ({"catalog_price_id": pack, "currency": "US"}, "CURRENCY_INVALID"),
    ]
    for fields, reason in cases:
        err = rpc_error(lambda f=fields: create(world, bearer, **f))  # type: ignore[misc]
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (fields, err.details())
        assert error_reason(err) == reason, fields
    assert world.count(PaymentIntent) == 0
    assert world.stripe.v1.payment_intents.list(params={"limit": 10}).data == []


def test_a_currency_in_upper_case_is_taken_as_prices_take_it(world: World):
    """`USD` is `usd`, as CreatePrice takes it: the intent, its row and Stripe's are in `usd`;
    beside a `usd` price it is that price's currency (no PAYMENT_AMOUNT_MISMATCH)."""
    pack = one_time_pack(world, "pack-upper", amount=1500)
    bearer, _ = token(world)
    plain = create(world, bearer, currency="USD")
    assert (plain.amount, plain.currency) == (SEED_BODY["amount"], "usd")
    remote = world.stripe.v1.payment_intents.retrieve(plain.stripe_payment_intent_id)
    assert remote.currency == "usd"
    priced = create(world, bearer, catalog_price_id=pack, amount=0, currency="Usd")
    assert (priced.amount, priced.currency) == (1500, "usd")
    with world.deps.db.transaction(readonly=True) as session:
        stored = {
            row.id: row.currency
            for row in session.scalars(
                select(PaymentIntent).where(
                    PaymentIntent.id.in_([plain.payment_intent_id, priced.payment_intent_id])
                )
            )
        }
    assert stored == {plain.payment_intent_id: "usd", priced.payment_intent_id: "usd"}


def test_a_three_decimal_amount_must_end_in_zero_even_when_a_stored_price_gives_it(
    world: World,
):
    """Stripe refuses 1005 kwd (its three-decimal currencies take amounts ending in 0): the
    intent is refused first, naming `amount`, also when the amount comes from a price stored
    before CreatePrice refused such prices (then naming `catalog_price_id`, the field the
    caller sent); 1010 kwd is an intent, at Stripe too."""
    legacy = one_time_pack(world, "pack-kwd-legacy", amount=1500)
    with world.deps.db.transaction() as session:
        session.execute(
            update(Price).where(Price.id == legacy).values(currency="kwd", unit_amount=1005)
        )
    bearer, _ = token(world)
    for fields, field in (
        ({"amount": 1005, "currency": "kwd"}, "amount"),
        ({"amount": 2995, "currency": "BHD"}, "amount"),
        ({"amount": 1, "currency": "tnd"}, "amount"),
        ({"catalog_price_id": legacy, "amount": 0, "currency": ""}, "catalog_price_id"),
    ):
        err = rpc_error(lambda f=fields: create(world, bearer, **f))  # type: ignore[misc]
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (fields, err.details())
        assert error_reason(err) == "PAYMENT_AMOUNT_INVALID", (fields, err.details())
        assert error_field(err) == field
    assert world.count(PaymentIntent) == 0
    assert world.stripe.v1.payment_intents.list(params={"limit": 10}).data == []
    intent = create(world, bearer, amount=1010, currency="KWD")
    assert (intent.amount, intent.currency) == (1010, "kwd")
    remote = world.stripe.v1.payment_intents.retrieve(intent.stripe_payment_intent_id)
    assert (remote.amount, remote.currency) == (1010, "kwd")


def test_a_price_granting_more_than_can_be_stored_is_400_and_creates_nothing(world: World):
    """Two grants of one credit type that together pass the largest storable amount: the
    payment could never be fulfilled (its webhook failed for good after the buyer paid), so
    it is refused first (README "Credits": AMOUNT_INVALID), here and at the provider."""
    half = catalog_pb2.CreditGrantSpec(
        credit_type="calls", amount="60000000000000000000", on_purchase=True
    )
    unstorable = world.price(
        "pack-unstorable", amount=1500, recurring=False, grants=[half, half]
    ).price_id
    bearer, _ = token(world)
    err = rpc_error(lambda: create(world, bearer, catalog_price_id=unstorable))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert error_reason(err) == "AMOUNT_INVALID"
    assert world.count(PaymentIntent) == 0
    assert world.stripe.v1.payment_intents.list(params={"limit": 10}).data == []


def test_a_payment_that_would_fill_a_balance_past_the_storable_amount_is_400(world: World):
    from billing.v1 import credit_pb2

    price_id = one_time_pack(world, "pack-full")
    bearer, account = token(world)
    world.credits.GrantCredits(
        credit_pb2.GrantCreditsRequest(
            account=account,
            credit_type="pack_calls",
            amount="99999999999999999999.999999999999999999",
            request_id="fill-up",
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )
    err = rpc_error(
        lambda: create(world, bearer, amount=1500, currency="usd", catalog_price_id=price_id)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert error_reason(err) == "AMOUNT_INVALID"
    assert world.count(PaymentIntent) == 0
    assert world.stripe.v1.payment_intents.list(params={"limit": 10}).data == []


def test_another_accounts_intent_is_not_found_and_scopes_are_checked(world: World):
    mine, _ = token(world)
    theirs, _ = token(world)
    intent = create(world, mine)
    for ident in (intent.payment_intent_id, intent.stripe_payment_intent_id):
        err = rpc_error(lambda i=ident: get(world, theirs, i))  # type: ignore[misc]
        assert err.code() == grpc.StatusCode.NOT_FOUND
    # The service key reaches every account's; a token without `payments` reaches none.
    assert (
        stub(world)
        .GetPaymentIntent(
            payment_pb2.GetPaymentIntentRequest(payment_intent_id=intent.payment_intent_id),
            metadata=SERVICE_MD,
            timeout=10,
        )
        .payment_intent_id
        == intent.payment_intent_id
    )
    reader, _ = token(world, ["billing:read"])
    err = rpc_error(lambda: create(world, reader))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(err) == "SCOPE_MISSING"


def test_request_id_makes_creation_idempotent_and_refuses_other_parameters(world: World):
    bearer, account = token(world)
    first = create(world, bearer, request_id="pay-once")
    again = create(world, bearer, request_id="pay-once")
    assert again.payment_intent_id == first.payment_intent_id
    assert again.stripe_payment_intent_id == first.stripe_payment_intent_id
    assert world.count(PaymentIntent, PaymentIntent.billing_account_id == account) == 1
    assert len(world.stripe.v1.payment_intents.list(params={"limit": 10}).data) == 1
    err = rpc_error(lambda: create(world, bearer, request_id="pay-once", amount=3000))
    assert error_reason(err) == "IDEMPOTENCY_KEY_REUSED"
    # Created for an account by the service key, which names it.
    made = stub(world).CreatePaymentIntent(
        payment_pb2.CreatePaymentIntentRequest(account=account, amount=500, currency="eur"),
        metadata=SERVICE_MD,
        timeout=30,
    )
    assert made.billing_account_id == account and made.currency == "eur"


def test_a_currency_differing_only_in_case_is_the_same_request_under_one_request_id(
    world: World,
):
    """`USD` is `usd` (the intent records `usd` either way), so a retry spelling it in the
    other case is the same request: the same intent, not IDEMPOTENCY_KEY_REUSED."""
    bearer, account = token(world)
    first = create(world, bearer, request_id="pay-case", currency="USD")
    for spelled in ("usd", "Usd", "USD"):
        again = create(world, bearer, request_id="pay-case", currency=spelled)
        assert again.payment_intent_id == first.payment_intent_id
        assert again.stripe_payment_intent_id == first.stripe_payment_intent_id
    assert world.count(PaymentIntent, PaymentIntent.billing_account_id == account) == 1
    assert len(world.stripe.v1.payment_intents.list(params={"limit": 10}).data) == 1
    err = rpc_error(lambda: create(world, bearer, request_id="pay-case", currency="eur"))
    assert error_reason(err) == "IDEMPOTENCY_KEY_REUSED"


def test_a_checkouts_payment_intent_events_are_ignored_so_its_purchase_is_recorded_once(
    world: World,
):
    world.price("one-off", amount=700, recurring=False, group="")
    checkout_token, account = world.token()
    answer = world.buy(checkout_token, "one-off")
    world.pay(answer.session.stripe_checkout_session_id)
    world.settled()
    bought = purchases(world, account)
    assert [(p.checkout_session_id, p.payment_intent_id) for p in bought] == [
        (answer.session.checkout_session_id, None)
    ]
    session = world.stripe.v1.checkout.sessions.retrieve(answer.session.stripe_checkout_session_id)
    pi_events = events_of(world, "payment_intent.succeeded", str(session.payment_intent))
    assert pi_events, "the sandbox's checkout emitted no payment_intent.succeeded"
    for evt in pi_events:
        status, reason = inbox_status(world, evt["id"])
        assert status == "ignored" and reason and "did not create" in reason
    assert world.count(PaymentIntent) == 0


@pytest.mark.postgres
def test_concurrent_deliveries_of_the_success_record_one_purchase_on_postgres(
    pg_url: str, tmp_path
):  # type: ignore[no-untyped-def]
    world = start_world(pg_url, tmp_path, deliver=False)
    try:
        price_id = one_time_pack(world, "pack-race")
        bearer, account = token(world)
        intent = create(world, bearer, amount=0, currency="", catalog_price_id=price_id)
        confirm(world, intent.stripe_payment_intent_id)
        event = events_of(world, "payment_intent.succeeded", intent.stripe_payment_intent_id)[0]
        twin = {**event, "id": event["id"] + "_twin"}
        bodies = [json.dumps(event).encode()] * 8 + [json.dumps(twin).encode()] * 8
        target = world.grpc_target
        start = threading.Barrier(len(bodies))

        def deliver(body: bytes) -> bool:
            with grpc.insecure_channel(target) as channel:
                hook = webhook_pb2_grpc.WebhookServiceStub(channel)
                start.wait()
                return hook.RecordStripeEvent(
                    webhook_pb2.RecordStripeEventRequest(
                        payload=body, stripe_signature=header(body, WEBHOOK_SECRET)
                    ),
                    metadata=SERVICE_MD,
                    timeout=60,
                ).duplicate

        with ThreadPoolExecutor(len(bodies)) as pool:
            duplicates = list(pool.map(deliver, bodies))
        assert duplicates.count(False) == 2  # each event id stored once ...
        wait_for(lambda: purchases(world, account), what="the purchase")
        assert len(purchases(world, account)) == 1  # ... and the payment recorded once
        assert world.count(CreditGrant, CreditGrant.billing_account_id == account) == 1
        assert world.balance(account, "pack_calls") == "250"
        assert world.notifications(account).count("payment_intent.succeeded") == 1
        # Both applied (one as a no-op under the natural-key guard): none failed on a constraint.
        assert [inbox_status(world, e["id"])[0] for e in (event, twin)] == ["applied"] * 2
    finally:
        world.stop()


def test_the_providers_minimum_charge_itself_is_accepted(world: World):
    bearer, _ = token(world)
    # No minimum listed for isk: one krona, 100 of its minor units (Stripe takes whole kronur).
    for amount, currency in ((50, "usd"), (30, "gbp"), (50, "jpy"), (100, "isk")):
        made = create(world, bearer, amount=amount, currency=currency)
        assert (made.amount, made.currency) == (amount, currency)


def test_an_intent_the_provider_refuses_leaves_nothing_pending(world: World):
    """Stripe refusing the payment intent (here: the account's customer was deleted in
    Stripe's dashboard) is 400 PROVIDER_REQUEST_INVALID and, as for any refused request,
    creates nothing: no `pending` row for the sweeper to send again on every run."""
    import datetime as dt

    from sqlalchemy import select

    from tollbooth.payments import intents
    from tollbooth.provider.client import StripeProvider

    bearer, account = token(world)
    first = create(world, bearer)  # the account's provider customer exists from here on
    customer = world.stripe.v1.payment_intents.retrieve(first.stripe_payment_intent_id).customer
    assert isinstance(customer, str)
    world.stripe.v1.customers.delete(customer)
    for request_id in ("refused", ""):
        err = rpc_error(lambda: create(world, bearer, request_id=request_id))  # noqa: B023
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(err) == "PROVIDER_REQUEST_INVALID"
    with world.deps.db.transaction(readonly=True) as session:
        statuses = session.scalars(
            select(PaymentIntent.status).where(PaymentIntent.billing_account_id == account)
        ).all()
    assert sorted(statuses) == ["requires_payment_method"]  # the first one only
    # Nothing for `tollbooth reconcile` to send again, however old.
    swept = intents.sweep_pending(
        world.deps.db, StripeProvider.from_settings(world.settings), older_than=dt.timedelta(0)
    )
    assert swept == intents.Sweep([], [], [])


def test_a_full_refund_of_a_payment_intent_ends_its_purchase_and_what_it_entitles(world: World):
    from billing.v1 import catalog_pb2, entitlement_pb2, entitlement_pb2_grpc

    price_id = world.price(
        "pack-sso",
        amount=1500,
        recurring=False,
        entitlements=[catalog_pb2.Entitlement(feature="pack-sso")],
    ).price_id
    bearer, account = token(world)
    intent = create(world, bearer, amount=0, currency="", catalog_price_id=price_id)
    confirm(world, intent.stripe_payment_intent_id)
    world.settled()

    def allowed() -> bool:
        return (
            entitlement_pb2_grpc.EntitlementServiceStub(world.channel)
            .CheckEntitlement(
                entitlement_pb2.CheckEntitlementRequest(account=account, feature="pack-sso"),
                metadata=SERVICE_MD,
                timeout=10,
            )
            .allowed
        )

    assert allowed() is True
    world.stripe.v1.refunds.create(params={"payment_intent": intent.stripe_payment_intent_id})
    world.settled()
    assert allowed() is False
    [bought] = purchases(world, account)
    assert bought.refunded_at is not None  # kept as history, no longer held


def test_a_refund_applied_before_the_payment_s_success_ends_its_purchase(tmp_path):  # type: ignore[no-untyped-def]
    from billing.v1 import catalog_pb2
    from tests.devstack import migrated_sqlite

    world = start_world(migrated_sqlite(tmp_path / "billing.db"), tmp_path, deliver=False)
    try:
        price_id = world.price(
            "pack-first",
            amount=1500,
            recurring=False,
            grants=[catalog_pb2.CreditGrantSpec(credit_type="pack", amount="10", on_purchase=True)],
        ).price_id
        bearer, account = token(world)
        intent = create(world, bearer, amount=0, currency="", catalog_price_id=price_id)
        stripe_id = intent.stripe_payment_intent_id
        confirm(world, stripe_id)
        world.stripe.v1.refunds.create(params={"payment_intent": stripe_id})
        charge = str(world.stripe.v1.payment_intents.retrieve(stripe_id).latest_charge)
        refunded = events_of(world, "charge.refunded", charge)[-1]
        succeeded = events_of(world, "payment_intent.succeeded", stripe_id)[0]
        for body in (refunded, succeeded, refunded, succeeded):
            assert signed_send(world, json.dumps(body).encode()) == 200
        assert world.balance(account, "pack") == "0"
        [bought] = purchases(world, account)
        assert bought.refunded_at is not None
        assert world.notifications(account).count("credits.voided") == 1
    finally:
        world.stop()


def test_a_retry_asking_for_the_same_payment_another_way_is_the_same_request(world: World):
    """The price's amount and currency written out, or left for the price to give; the
    description and e-mail with the spaces the service strips: the same intent, so under one
    request_id the same request (replayed), whether or not the first attempt completed. A
    different amount is IDEMPOTENCY_KEY_REUSED."""
    price_id = one_time_pack(world, "pack-same")
    bearer, account = token(world)
    first = create(world, bearer, amount=0, currency="", catalog_price_id=price_id, request_id="p")
    for fields in (
        {"amount": first.amount, "currency": "USD"},
        {"amount": 0, "currency": "", "description": " Purchase from YourApp "},
        {"amount": 0, "currency": "", "receipt_email": " customer@example.com"},
    ):
        again = create(world, bearer, catalog_price_id=price_id, request_id="p", **fields)
        assert again == first, fields
    err = rpc_error(lambda: create(world, bearer, amount=0, currency="", request_id="p"))
    assert error_reason(err) == "IDEMPOTENCY_KEY_REUSED"
    assert world.count(PaymentIntent, PaymentIntent.billing_account_id == account) == 1
