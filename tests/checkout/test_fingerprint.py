"""The checkout intent's fingerprint (what a request asks for): unambiguous for new intents,
and an intent recorded before it changed is still recognised by a retry."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest
import sqlalchemy as sa

from tests.checkout.support import World
from tests.helpers import error_reason
from tollbooth.checkout.asked import _fingerprints
from tollbooth.db.models import CheckoutSession

SUCCESS = "https://app.example/ok"


def line(price_id: str, quantity: int = 1) -> SimpleNamespace:
    return SimpleNamespace(price=SimpleNamespace(id=price_id), quantity=quantity)


def test_requests_the_joined_fingerprint_confused_have_fingerprints_of_their_own() -> None:
    """Joined with U+001F, a reference holding that character could pass for another field:
    a setup-mode request and a payment one shared a fingerprint, as did an e-mail and a
    reference spelling it. The recorded fingerprint tells them apart."""
    pairs = [
        (
            ([], SUCCESS, "", "x", "setup", None),
            ([], SUCCESS, "", "x\x1fsetup", "payment", None),
        ),
        (
            ([line("price_a")], SUCCESS, "", "r", "payment", "a@b.example"),
            ([line("price_a")], SUCCESS, "", "r\x1fcustomer_email=a@b.example", "payment", None),
        ),
    ]
    for one, other in pairs:
        (new_one, legacy_one), (new_other, legacy_other) = (
            _fingerprints(*one),
            _fingerprints(*other),
        )
        assert legacy_one == legacy_other  # the collision the old form had
        assert new_one != new_other
    assert (
        _fingerprints([line("price_a", 2)], SUCCESS, "", "", "payment", None)[0]
        != (_fingerprints([line("price_a", 1)], SUCCESS, "", "", "payment", None)[0])
    )


def test_a_checkout_recorded_with_the_joined_fingerprint_still_replays(world: World) -> None:
    world.price("pro", group="plan")
    token, account = world.token()
    first = world.buy(token, "pro", request_id="fp-1", reference="order-1")
    ours = first.session.checkout_session_id
    with world.deps.db.transaction() as session:
        row = session.get(CheckoutSession, ours)
        assert row is not None
        lines = [line(item["price_id"], int(item["quantity"])) for item in row.items]
        new, legacy = _fingerprints(
            lines, row.success_url, row.cancel_url, row.client_reference, row.mode, None
        )
        assert row.fingerprint == new != legacy  # new intents record the unambiguous form
        # As an intent recorded before the change has it.
        session.execute(
            sa.update(CheckoutSession).where(CheckoutSession.id == ours).values(fingerprint=legacy)
        )
    with world.deps.db.transaction(readonly=True) as session:
        assert session.get(CheckoutSession, ours).fingerprint == legacy  # type: ignore[union-attr]
    again = world.buy(token, "pro", request_id="fp-1", reference="order-1")
    assert again == first
    with pytest.raises(grpc.RpcError) as err:
        world.buy(token, "pro", request_id="fp-1", reference="order-2")
    assert error_reason(err.value) == "IDEMPOTENCY_KEY_REUSED"
    assert world.count(CheckoutSession, CheckoutSession.billing_account_id == account) == 1
    assert len(world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data) == 1


def test_a_currency_differing_only_in_case_is_the_same_checkout_under_one_request_id(
    world: World,
) -> None:
    """Seed 001's `currency` is taken in any case (`USD` is `usd`): a retry spelling it in
    the other case is the same request, not IDEMPOTENCY_KEY_REUSED."""
    from billing.v1 import checkout_pb2
    from tests.conftest import bearer_md

    world.price("pro", group="plan")
    token, account = world.token()

    def buy(currency: str) -> checkout_pb2.CreateCheckoutSessionResponse:
        return world.checkout.CreateCheckoutSession(
            checkout_pb2.CreateCheckoutSessionRequest(
                items=[checkout_pb2.CheckoutItem(lookup_key="pro")],
                success_url=SUCCESS,
                currency=currency,
                request_id="fp-case",
            ),
            metadata=bearer_md(token),
            timeout=30,
        )

    first = buy("USD")
    assert buy("usd") == first and buy("Usd") == first
    assert world.count(CheckoutSession, CheckoutSession.billing_account_id == account) == 1
    with pytest.raises(grpc.RpcError) as err:
        buy("eur")
    assert error_reason(err.value) == "IDEMPOTENCY_KEY_REUSED"


def _ask(world: World, token: str, **fields: object) -> object:
    from billing.v1 import checkout_pb2
    from tests.conftest import bearer_md

    body = {
        "success_url": SUCCESS,
        "cancel_url": "https://app.example/pricing",
        "client_reference": "order-1",
        "request_id": "fp-meaning",
        **fields,
    }
    return world.checkout.CreateCheckoutSession(
        checkout_pb2.CreateCheckoutSessionRequest(**body),  # type: ignore[arg-type]
        metadata=bearer_md(token),
        timeout=30,
    )


def test_a_retry_naming_the_same_purchase_another_way_replays_the_first_answer(
    world: World,
) -> None:
    """ "The same parameters" is what the request means: the price by lookup key, by catalog
    id, as seed 002's `tier` or seed 003's `line_items`, a reference with the spaces the
    service strips, a scheme in upper case: all record the same intent, so under one
    request_id they are one request, whether or not the first attempt has completed. What
    asks for something else (another quantity, another reference) is IDEMPOTENCY_KEY_REUSED."""
    from billing.v1 import checkout_pb2

    price = world.price("pro", group="plan").price_id
    token, account = world.token()
    first = _ask(world, token, items=[checkout_pb2.CheckoutItem(lookup_key="pro")])
    same = [
        {"items": [checkout_pb2.CheckoutItem(catalog_price_id=price)]},
        {"tier": "pro"},
        {"line_items": [checkout_pb2.CheckoutLineItem(price=price, quantity=1)]},
        {"items": [checkout_pb2.CheckoutItem(lookup_key="pro")], "client_reference": " order-1 "},
        {
            "items": [checkout_pb2.CheckoutItem(lookup_key="pro")],
            "success_url": "HTTPS" + SUCCESS[5:],
        },
    ]
    for fields in same:
        assert _ask(world, token, **fields) == first, fields
    for fields in (
        {"items": [checkout_pb2.CheckoutItem(lookup_key="pro", quantity=2)]},
        {"items": [checkout_pb2.CheckoutItem(lookup_key="pro")], "client_reference": "order-2"},
    ):
        with pytest.raises(grpc.RpcError) as err:
            _ask(world, token, **fields)
        assert error_reason(err.value) == "IDEMPOTENCY_KEY_REUSED", fields
    assert world.count(CheckoutSession, CheckoutSession.billing_account_id == account) == 1
    assert len(world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data) == 1


def test_the_first_request_sent_again_after_a_variant_completed_it_is_replayed(
    world: World,
) -> None:
    """The first attempt fails at the provider; a retry naming the price another way completes
    the same intent and stores its answer. The first request, sent again exactly as it was,
    is the same request: it must get that answer, not IDEMPOTENCY_KEY_REUSED."""
    from billing.v1 import checkout_pb2

    price = world.price("pro", group="plan").price_id
    token, account = world.token()
    by_key = {"items": [checkout_pb2.CheckoutItem(lookup_key="pro")]}
    world.sandbox.stalls.add("POST", "/v1/checkout/sessions", seconds=0, status=503)
    with pytest.raises(grpc.RpcError) as err:
        _ask(world, token, **by_key)
    assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
    done = _ask(world, token, items=[checkout_pb2.CheckoutItem(catalog_price_id=price)])
    assert _ask(world, token, **by_key) == done
    assert world.count(CheckoutSession, CheckoutSession.billing_account_id == account) == 1
