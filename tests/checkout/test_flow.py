"""Buying through checkout, finalised by webhooks from the sandbox, through real stubs."""

from __future__ import annotations

import grpc
import pytest

from billing.v1 import catalog_pb2, checkout_pb2
from tests.checkout.support import World, wait_for
from tests.conftest import SERVICE_MD, bearer_md
from tests.helpers import error_reason
from tollbooth.db.models import BillingEffect, CreditGrant, Purchase

CREDITS = [
    catalog_pb2.CreditGrantSpec(
        credit_type="api_calls", amount="1000", on_purchase=True, on_renewal=True
    )
]


def test_buying_pro_activates_the_plan_and_grants_its_credits_after_the_webhook(world: World):
    world.price("pro", grants=CREDITS, entitlements=[catalog_pb2.Entitlement(feature="sso")])
    token, account = world.token()
    answer = world.buy(token, "pro", reference="order-42")
    assert answer.WhichOneof("next_action") == "session"
    assert answer.url == answer.session.url and "/sandbox/checkout/cs_test_" in answer.url
    assert answer.session.mode == checkout_pb2.CHECKOUT_MODE_SUBSCRIPTION
    assert answer.session.status == checkout_pb2.CHECKOUT_SESSION_STATUS_OPEN
    assert answer.session.amount_total == 2900
    assert world.status(token).plan == "free"  # nothing changes before payment

    world.pay(answer.session.stripe_checkout_session_id)
    world.settled()
    status = world.status(token)
    assert status.plan == "pro"
    assert status.state == checkout_pb2.SUBSCRIPTION_STATE_ACTIVE
    assert status.current_period_end_time.seconds > 0
    assert not status.cancel_at_period_end
    assert [e.feature for e in status.entitlements] == ["sso"]
    assert world.balance(account, "api_calls") == "1000"
    got = world.checkout.GetCheckoutSession(
        checkout_pb2.GetCheckoutSessionRequest(
            checkout_session_id=answer.session.checkout_session_id
        ),
        metadata=bearer_md(token),
    )
    assert got.status == checkout_pb2.CHECKOUT_SESSION_STATUS_COMPLETE
    assert got.payment_status == checkout_pb2.PAYMENT_STATUS_PAID
    assert got.client_reference == "order-42" and got.url == ""
    types = set(world.notifications(account))
    assert {"checkout.completed", "subscription.created", "credits.granted"} <= types


def test_a_conflicting_price_answers_with_the_portal_and_creates_no_checkout(world: World):
    world.price("pro", group="plan")
    world.price("team", group="plan", amount=9900)
    token, _ = world.token()
    world.pay(world.buy(token, "pro").session.stripe_checkout_session_id)
    world.settled()
    before = len(world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data)
    for key in ("team", "pro"):
        answer = world.buy(token, key)
        assert answer.WhichOneof("next_action") == "portal"
        assert "/sandbox/portal/bps_" in answer.url
        assert answer.portal.conflicting_subscription_id.startswith("sub_")
        assert not answer.HasField("session")
    assert len(world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data) == before


def test_a_stackable_price_or_another_group_is_not_a_conflict(world: World):
    world.price("pro", group="plan")
    world.price("seats", group="plan", stackable=True, amount=500)
    world.price("support", group="addons", amount=1000)
    token, _ = world.token()
    world.pay(world.buy(token, "pro").session.stripe_checkout_session_id)
    world.settled()
    assert world.buy(token, "seats").WhichOneof("next_action") == "session"
    assert world.buy(token, "support").WhichOneof("next_action") == "session"


def test_the_portal_before_any_purchase_is_account_not_billed(world: World):
    token, _ = world.token()
    with pytest.raises(grpc.RpcError) as exc:
        world.checkout.CreatePortalSession(
            checkout_pb2.CreatePortalSessionRequest(return_url="https://app.example/account"),
            metadata=bearer_md(token),
        )
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(exc.value) == "ACCOUNT_NOT_BILLED"


def test_the_portal_of_a_customer_that_never_paid_is_account_not_billed(world: World):
    """A checkout opened and left unpaid made the Stripe customer, but there is nothing to
    manage: no subscription, no paid purchase. Once paid, the portal opens."""
    world.price("pro")
    token, account = world.token()
    opened = world.buy(token, "pro")
    with pytest.raises(grpc.RpcError) as exc:
        world.checkout.CreatePortalSession(
            checkout_pb2.CreatePortalSessionRequest(return_url="https://app.example/account"),
            metadata=bearer_md(token),
        )
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(exc.value) == "ACCOUNT_NOT_BILLED"
    world.pay(opened.session.stripe_checkout_session_id)
    world.settled()
    portal = world.checkout.CreatePortalSession(
        checkout_pb2.CreatePortalSessionRequest(return_url="https://app.example/account"),
        metadata=bearer_md(token),
    )
    assert portal.url


def test_the_portal_of_a_billed_account_maps_its_options(world: World):
    world.price("pro")
    token, _ = world.token()
    world.billed(token, "pro")
    portal = world.checkout.CreatePortalSession(
        checkout_pb2.CreatePortalSessionRequest(
            return_url="https://app.example/account",
            options=checkout_pb2.PortalOptions(allow_cancel=False),
        ),
        metadata=bearer_md(token),
    )
    assert portal.return_url == "https://app.example/account"
    remote = world.stripe.v1.billing_portal.configurations.list(params={"limit": 100}).data
    configured = [c for c in remote if c.to_dict()["metadata"].get("tollbooth_options")]
    assert len(configured) == 1
    features = configured[0].features
    assert features.subscription_cancel.enabled is False
    assert features.invoice_history.enabled is True
    assert features.payment_method_update.enabled is True
    # No return_url: back to the first allowed origin (BILLING_REDIRECT_ORIGINS).
    home = world.checkout.CreatePortalSession(
        checkout_pb2.CreatePortalSessionRequest(), metadata=bearer_md(token)
    )
    assert home.return_url == "https://app.example/" and home.portal_url


def test_the_portal_offers_every_active_plan_of_a_held_group_bought_or_not(world: World):
    """Switching plans in the portal: the configuration lists every active price of the groups
    the account holds, synced to the provider first (team was never bought by anyone, so it had
    no provider price and was left out), and none of a group it does not hold."""
    pro = world.price("pro", group="plan")
    team = world.price("team", group="plan", amount=9900)
    world.price("storage", group="storage", amount=500)
    old = world.price("old", group="plan", amount=1900)
    world.catalog.ArchivePrice(
        catalog_pb2.ArchivePriceRequest(price_id=old.price_id, request_id="archive-old"),
        metadata=SERVICE_MD,
    )
    other, _ = world.token()
    world.pay(world.buy(other, "storage").session.stripe_checkout_session_id)  # synced
    token, _ = world.token()
    world.pay(world.buy(token, "pro").session.stripe_checkout_session_id)
    world.settled()
    portal = world.checkout.CreatePortalSession(
        checkout_pb2.CreatePortalSessionRequest(return_url="https://app.example/account"),
        metadata=bearer_md(token),
    )
    store = world.sandbox.app.state.store
    with store.lock:
        config_id = store.get(portal.portal_session_id)["configuration"]
    update = world.stripe.v1.billing_portal.configurations.retrieve(config_id).to_dict()[
        "features"
    ]["subscription_update"]
    offered = {price for entry in update["products"] for price in entry["prices"]}

    def stripe_price(price_id: str) -> str:
        got = world.catalog.GetPrice(
            catalog_pb2.GetPriceRequest(price_id=price_id), metadata=SERVICE_MD, timeout=10
        )
        assert got.stripe_price_id
        return got.stripe_price_id

    assert update["enabled"] is True
    assert offered == {stripe_price(pro.price_id), stripe_price(team.price_id)}


def test_a_one_time_price_is_a_purchase_with_its_grants(world: World):
    world.price(
        "topup",
        recurring=False,
        amount=500,
        grants=[
            catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="250.5", on_purchase=True)
        ],
    )
    token, account = world.token()
    answer = world.buy(token, "topup", quantity=2)
    assert answer.session.mode == checkout_pb2.CHECKOUT_MODE_PAYMENT
    world.pay(answer.session.stripe_checkout_session_id)
    world.settled()
    listed = world.checkout.ListPurchases(
        checkout_pb2.ListPurchasesRequest(), metadata=bearer_md(token)
    )
    assert [(p.lookup_key, p.quantity, p.amount_total) for p in listed.purchases] == [
        ("topup", 2, 1000)
    ]
    assert world.balance(account, "api_calls") == "501"
    assert world.status(token).plan == "free"


def test_unknown_and_archived_prices_are_400_with_their_reason(world: World):
    archived = world.price("old")
    world.catalog.ArchivePrice(
        catalog_pb2.ArchivePriceRequest(price_id=archived.price_id, request_id="archive-old"),
        metadata=SERVICE_MD,
    )
    token, _ = world.token()
    cases = [
        (checkout_pb2.CheckoutItem(lookup_key="nope"), "PRICE_NOT_FOUND"),
        (checkout_pb2.CheckoutItem(catalog_price_id="price_missing"), "PRICE_NOT_FOUND"),
        (checkout_pb2.CheckoutItem(catalog_price_id=archived.price_id), "ARCHIVED"),
        (checkout_pb2.CheckoutItem(lookup_key="old"), "PRICE_NOT_FOUND"),
        (checkout_pb2.CheckoutItem(quantity=1), "FIELD_REQUIRED"),
    ]
    for item, reason in cases:
        with pytest.raises(grpc.RpcError) as exc:
            world.checkout.CreateCheckoutSession(
                checkout_pb2.CreateCheckoutSessionRequest(
                    items=[item], success_url="https://app.example/ok"
                ),
                metadata=bearer_md(token),
            )
        assert error_reason(exc.value) == reason, item
        assert exc.value.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
        )


def test_another_accounts_checkout_session_is_not_found_like_a_missing_one(world: World):
    world.price("pro")
    mine, _ = world.token()
    theirs, _ = world.token()
    session_id = world.buy(mine, "pro").session.checkout_session_id
    for ident in (session_id, "chk_doesnotexist"):
        with pytest.raises(grpc.RpcError) as exc:
            world.checkout.GetCheckoutSession(
                checkout_pb2.GetCheckoutSessionRequest(checkout_session_id=ident),
                metadata=bearer_md(theirs),
            )
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND
        assert "not found" in exc.value.details()


def test_a_replayed_request_id_returns_the_same_checkout(world: World):
    world.price("pro")
    token, _ = world.token()
    first = world.buy(token, "pro", request_id="buy-1")
    again = world.buy(token, "pro", request_id="buy-1")
    assert again == first
    assert len(world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data) == 1


def test_catalog_hints_say_current_manage_or_buy(world: World):
    pro = world.price("pro", group="plan")
    team = world.price("team", group="plan", product_id=pro.product_id, amount=9900)
    world.price("seats", group="plan", stackable=True, product_id=pro.product_id)
    token, _ = world.token()
    listing = lambda: world.catalog.ListPrices(  # noqa: E731
        catalog_pb2.ListPricesRequest(product_id=pro.product_id), metadata=bearer_md(token)
    )
    assert {p.hint for p in listing().prices} == {catalog_pb2.PURCHASE_HINT_BUY}
    world.pay(world.buy(token, "pro").session.stripe_checkout_session_id)
    world.settled()
    hints = {p.lookup_key: p.hint for p in listing().prices}
    assert hints == {
        "pro": catalog_pb2.PURCHASE_HINT_CURRENT,
        "team": catalog_pb2.PURCHASE_HINT_MANAGE,
        "seats": catalog_pb2.PURCHASE_HINT_BUY,
    }
    assert team.price_id


def test_a_price_never_synced_is_synced_on_its_first_checkout(world: World):
    price = world.price("pro")
    assert price.stripe_price_id == ""
    token, _ = world.token()
    world.buy(token, "pro")
    synced = world.catalog.GetPrice(
        catalog_pb2.GetPriceRequest(price_id=price.price_id), metadata=SERVICE_MD
    )
    remote = world.stripe.v1.prices.retrieve(synced.stripe_price_id)
    assert (remote.unit_amount, remote.currency, remote.recurring.interval) == (
        2900,
        "usd",
        "month",
    )
    assert remote.metadata["tollbooth_price_id"] == price.price_id


def test_guards_and_grants_are_written_once_per_checkout(world: World):
    world.price("pro", grants=CREDITS)
    token, account = world.token()
    world.pay(world.buy(token, "pro").session.stripe_checkout_session_id)
    world.settled()
    assert world.count(BillingEffect, BillingEffect.key.like("checkout:%")) == 1
    assert world.count(CreditGrant, CreditGrant.billing_account_id == account) == 1
    assert world.count(Purchase) == 0
    wait_for(lambda: world.status(token).plan == "pro")
