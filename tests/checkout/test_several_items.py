"""Every recurring item of a subscription is recorded and used (issue 14, finding 9): a
subscription to two recurring prices of different groups holds both groups (conflicts, hints),
both prices' entitlements, and billing status lists both. A checkout's total over the
provider's limit is refused before anything is recorded."""

from __future__ import annotations

import grpc
from sqlalchemy import select, update

from billing.v1 import catalog_pb2, checkout_pb2
from tests.checkout.support import World
from tests.conftest import SERVICE_MD, bearer_md
from tests.entitlements.support import check
from tests.helpers import error_field, error_reason
from tollbooth.db.models import CheckoutSession, Price, Subscription
from tollbooth.db.subscription_items import SubscriptionItem

E = catalog_pb2.Entitlement


def buy_both(world: World, token: str) -> checkout_pb2.CreateCheckoutSessionResponse:
    return world.checkout.CreateCheckoutSession(
        checkout_pb2.CreateCheckoutSessionRequest(
            items=[
                checkout_pb2.CheckoutItem(lookup_key="pro", quantity=1),
                checkout_pb2.CheckoutItem(lookup_key="support", quantity=3),
            ],
            success_url="https://app.example/ok",
            cancel_url="https://app.example/pricing",
        ),
        metadata=bearer_md(token),
        timeout=30,
    )


def test_a_subscription_with_two_recurring_prices_holds_both(world: World) -> None:
    pro = world.price("pro", group="plan", entitlements=[E(feature="sso")])
    support = world.price("support", group="care", amount=500, entitlements=[E(feature="phone")])
    world.price("team", group="plan", amount=9900)
    world.price("premium-care", group="care", amount=900)
    world.price("extra", group="other", amount=100)
    token, account = world.token()
    answer = buy_both(world, token)
    assert answer.WhichOneof("next_action") == "session"
    world.pay(answer.session.stripe_checkout_session_id)
    world.settled()

    with world.deps.db.transaction(readonly=True) as session:
        sub = session.scalars(
            select(Subscription).where(Subscription.billing_account_id == account)
        ).one()
        items = session.scalars(
            select(SubscriptionItem)
            .where(SubscriptionItem.subscription_id == sub.id)
            .order_by(SubscriptionItem.position)
        ).all()
        sub_id = sub.id
        recorded = sorted((i.price_id, i.subscription_group, i.quantity) for i in items)
    assert recorded == sorted([(pro.price_id, "plan", 1), (support.price_id, "care", 3)])

    # Both groups conflict for a new checkout (the portal answers); another group does not.
    for key in ("team", "premium-care", "support"):
        conflict = world.buy(token, key)
        assert conflict.WhichOneof("next_action") == "portal", key
        assert conflict.portal.conflicting_subscription_id == sub_id
    assert world.buy(token, "extra").WhichOneof("next_action") == "session"

    # Both prices' entitlements are allowed; billing status lists both.
    assert check(world, "sso", account=account).allowed
    assert check(world, "phone", account=account).allowed
    status = world.status(token)
    assert status.plan == "pro"
    assert sorted(e.feature for e in status.entitlements) == ["phone", "sso"]
    listed = world.checkout.ListSubscriptions(
        checkout_pb2.ListSubscriptionsRequest(), metadata=bearer_md(token), timeout=10
    ).subscriptions
    assert [(i.lookup_key, i.subscription_group, i.quantity) for i in listed[0].items] == [
        ("pro", "plan", 1),
        ("support", "care", 3),
    ]


def test_a_total_over_the_providers_limit_is_400_and_records_nothing(world: World) -> None:
    """99999999 minor units is the most the provider charges at once: a bigger checkout total
    is refused before an intent is recorded or the provider is called (the provider refused it
    only after a pending intent was written)."""
    pack = world.price("pack", recurring=False, amount=1500).price_id
    # The catalog holds no price over the limit (PRICE_AMOUNT_INVALID): the largest, twice.
    huge = world.price("huge", recurring=False, amount=99_999_999).price_id
    token, account = world.token()
    for lines in (
        [checkout_pb2.CheckoutLineItem(price=pack, quantity=999_999)],
        [checkout_pb2.CheckoutLineItem(price=huge, quantity=2)],
    ):
        try:
            world.checkout.CreateCheckoutSession(
                checkout_pb2.CreateCheckoutSessionRequest(
                    line_items=lines, success_url="https://app.example/ok", mode="payment"
                ),
                metadata=bearer_md(token),
                timeout=30,
            )
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
            assert error_reason(err) == "CHECKOUT_AMOUNT_INVALID"
        else:
            raise AssertionError("a checkout over the provider's limit was created")
    assert world.count(CheckoutSession, CheckoutSession.billing_account_id == account) == 0
    assert world.stripe.v1.checkout.sessions.list(params={"limit": 10}).data == []
    # At the limit it is a checkout.
    at_limit = world.checkout.CreateCheckoutSession(
        checkout_pb2.CreateCheckoutSessionRequest(
            line_items=[checkout_pb2.CheckoutLineItem(price=pack, quantity=66_666)],
            success_url="https://app.example/ok",
        ),
        metadata=bearer_md(token),
        timeout=30,
    )
    assert at_limit.session.amount_total == 1500 * 66_666


def test_a_stored_three_decimal_price_not_ending_in_zero_is_400_before_the_provider(
    world: World,
) -> None:
    """Stripe takes a three-decimal currency's amount (KWD, BHD, JOD, OMR, TND) only when its
    last digit is 0. CreatePrice refuses any other (PRICE_AMOUNT_INVALID); a price stored
    before that rule (here written straight into the database) is refused at checkout before
    an intent is recorded or Stripe is called, and one ending in 0 is a checkout."""
    legacy = world.price("legacy-kwd", recurring=False, amount=1500).price_id
    with world.deps.db.transaction() as session:
        session.execute(
            update(Price).where(Price.id == legacy).values(currency="kwd", unit_amount=1005)
        )
    fine = world.price("fine-kwd", recurring=False, amount=1010, currency="KWD").price_id
    token, account = world.token()

    def buy(price_id: str) -> checkout_pb2.CreateCheckoutSessionResponse:
        return world.checkout.CreateCheckoutSession(
            checkout_pb2.CreateCheckoutSessionRequest(
                line_items=[checkout_pb2.CheckoutLineItem(price=price_id, quantity=1)],
                success_url="https://app.example/ok",
                mode="payment",
            ),
            metadata=bearer_md(token),
            timeout=30,
        )

    try:
        buy(legacy)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert error_reason(err) == "CHECKOUT_AMOUNT_INVALID", err.details()
        assert error_field(err) == "line_items[0]"
    else:
        raise AssertionError("a checkout of 1005 kwd was created")
    assert world.count(CheckoutSession, CheckoutSession.billing_account_id == account) == 0
    assert world.stripe.v1.checkout.sessions.list(params={"limit": 10}).data == []
    session = buy(fine).session
    assert (session.amount_total, session.currency) == (1010, "kwd")


def test_credit_grants_times_quantity_past_the_storable_amount_are_400_before_checkout(
    world: World,
) -> None:
    """README "Credits": a price's credit grant × quantity past the largest storable amount is
    AMOUNT_INVALID (400). It is refused when the checkout is asked for: the webhook of a paid
    checkout could never write it (the buyer paid, and nothing was granted, recorded or held)."""
    big = catalog_pb2.CreditGrantSpec(
        credit_type="tokens", amount="99999999999999999999", on_purchase=True
    )
    pack = world.price("big-grant", recurring=False, amount=100, stackable=True, grants=[big])
    half = catalog_pb2.CreditGrantSpec(
        credit_type="tokens", amount="50000000000000000000", on_purchase=True
    )
    other = world.price("half-grant", recurring=False, amount=100, stackable=True, grants=[half])
    token, account = world.token()
    for lines, field in (
        ([checkout_pb2.CheckoutLineItem(price=pack.price_id, quantity=2)], "line_items[0]"),
        (
            [
                checkout_pb2.CheckoutLineItem(price=other.price_id, quantity=1),
                checkout_pb2.CheckoutLineItem(price=pack.price_id, quantity=1),
            ],
            "line_items[1]",
        ),
    ):
        try:
            world.checkout.CreateCheckoutSession(
                checkout_pb2.CreateCheckoutSessionRequest(
                    line_items=lines, success_url="https://app.example/ok"
                ),
                metadata=bearer_md(token),
                timeout=30,
            )
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
            assert error_reason(err) == "AMOUNT_INVALID"
            assert field in (err.details() or "")
        else:
            raise AssertionError("a checkout granting more than can be stored was created")
    assert world.count(CheckoutSession, CheckoutSession.billing_account_id == account) == 0
    assert world.stripe.v1.checkout.sessions.list(params={"limit": 10}).data == []
    # The largest storable grant, once, is a checkout.
    once = world.checkout.CreateCheckoutSession(
        checkout_pb2.CreateCheckoutSessionRequest(
            line_items=[checkout_pb2.CheckoutLineItem(price=pack.price_id, quantity=1)],
            success_url="https://app.example/ok",
        ),
        metadata=bearer_md(token),
        timeout=30,
    )
    assert once.session.amount_total == 100


def test_a_purchase_that_would_fill_a_balance_past_the_storable_amount_is_400(
    world: World,
) -> None:
    """An account whose balance is at the largest storable amount: a checkout granting more
    of that credit type is refused when asked for (AMOUNT_INVALID), since the webhook of the
    paid checkout could never write its grant; another credit type is still sold."""
    from billing.v1 import credit_pb2

    one = catalog_pb2.CreditGrantSpec(credit_type="tokens", amount="1", on_purchase=True)
    pack = world.price("one-token", recurring=False, amount=100, stackable=True, grants=[one])
    token, account = world.token()
    world.credits.GrantCredits(
        credit_pb2.GrantCreditsRequest(
            account=account,
            credit_type="tokens",
            amount="99999999999999999999.999999999999999999",
            request_id="fill-up",
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )
    try:
        world.checkout.CreateCheckoutSession(
            checkout_pb2.CreateCheckoutSessionRequest(
                line_items=[checkout_pb2.CheckoutLineItem(price=pack.price_id, quantity=1)],
                success_url="https://app.example/ok",
            ),
            metadata=bearer_md(token),
            timeout=30,
        )
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert error_reason(err) == "AMOUNT_INVALID"
    else:
        raise AssertionError("a checkout whose grant can never be written was created")
    assert world.count(CheckoutSession, CheckoutSession.billing_account_id == account) == 0
    assert world.stripe.v1.checkout.sessions.list(params={"limit": 10}).data == []


def test_line_item_errors_name_the_list_the_body_used(world: World) -> None:
    """Seed 003's `line_items` and the `items` form each see their own field named."""
    from tests.credit.support import error_metadata

    pack = world.price("named-pack", recurring=False, amount=1500)
    token, account = world.token()
    for request, field in (
        (
            checkout_pb2.CreateCheckoutSessionRequest(
                line_items=[checkout_pb2.CheckoutLineItem(price=pack.price_id, quantity=-1)]
            ),
            "line_items[0].quantity",
        ),
        (
            checkout_pb2.CreateCheckoutSessionRequest(
                line_items=[
                    checkout_pb2.CheckoutLineItem(price=pack.price_id),
                    checkout_pb2.CheckoutLineItem(price=pack.lookup_key),
                ]
            ),
            "line_items[1]",
        ),
        (
            checkout_pb2.CreateCheckoutSessionRequest(
                items=[checkout_pb2.CheckoutItem(catalog_price_id=pack.price_id, quantity=-1)]
            ),
            "items[0].quantity",
        ),
    ):
        request.success_url = "https://app.example/ok"
        try:
            world.checkout.CreateCheckoutSession(request, metadata=bearer_md(token), timeout=30)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
            assert error_metadata(err)["field"] == field
        else:
            raise AssertionError(f"{field}: a bad line was accepted")
    assert world.count(CheckoutSession, CheckoutSession.billing_account_id == account) == 0
