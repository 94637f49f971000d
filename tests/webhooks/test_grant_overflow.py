"""A paid checkout whose credit grants no longer fit the account's balance (NUMERIC(38, 18):
below 10^20) is never left failing forever. CreateCheckoutSession checks the grants fit when
the checkout is created, but the balance can grow before it is paid (another purchase, a
grant): then the fulfilment could never write its grant, and the payment, taken, bought
nothing and stayed a `failed` event. It is refunded in full instead (as a duplicate of a price
bought once is), grants nothing, records no purchase, and `checkout.duplicate_refunded` says
why. SQLite and PostgreSQL."""

from __future__ import annotations

from billing.v1 import catalog_pb2
from tests.checkout.support import World, signed_send
from tests.webhooks.guards import completed, failed_events, notices, refunds_of
from tests.webhooks.test_once_guard import our_id, purchases, refunded

HUGE = "60000000000000000000"  # 6 x 10^19: one fits, two do not
GRANTS = [catalog_pb2.CreditGrantSpec(credit_type="tokens", amount=HUGE, on_purchase=True)]


def test_a_paid_checkout_whose_grant_no_longer_fits_is_refunded_not_failed(quiet: World):
    world = quiet
    world.price("pack", recurring=False, amount=5000, stackable=True, grants=GRANTS)
    token, account = world.token()
    # Two checkouts of the credit pack, both created while the balance was 0 (each fits).
    first = world.buy(token, "pack", request_id="tab-1").session.stripe_checkout_session_id
    later = world.buy(token, "pack", request_id="tab-2").session.stripe_checkout_session_id
    assert first != later
    world.pay(first)
    world.pay(later)
    assert signed_send(world, completed(world, first)) == 200
    assert world.balance(account, "tokens") == HUGE
    assert signed_send(world, completed(world, later)) == 200
    assert failed_events(world) == []
    assert world.balance(account, "tokens") == HUGE  # nothing more: it could not be stored
    assert purchases(world, account) == [our_id(world, first)]
    assert refunded(world, later) and not refunded(world, first)
    [notice] = notices(world, account, "checkout.duplicate_refunded")
    assert notice["checkout_session_id"] == our_id(world, later)
    assert notice["reason"] == "CREDITS_NOT_STORABLE"
    # Refunded at Stripe with no reason: it is no duplicate payment (that is `duplicate`).
    paid_by = str(world.stripe.v1.checkout.sessions.retrieve(later).payment_intent)
    [refund] = refunds_of(world, paid_by)
    assert (refund["reason"], refund["id"]) == (None, notice["refund"])
    # Redelivered: nothing again.
    assert signed_send(world, completed(world, later)) == 200
    assert len(notices(world, account, "checkout.duplicate_refunded")) == 1
    assert len(refunds_of(world, paid_by)) == 1
    assert purchases(world, account) == [our_id(world, first)]


def test_a_paid_payment_intent_whose_grant_no_longer_fits_is_refunded_not_failed(quiet: World):
    from tests.payments.support import confirm, create, get, token
    from tests.webhooks.test_once_guard_intents import fully_refunded, succeeded

    world = quiet
    pack = world.price("pack", recurring=False, amount=5000, stackable=True, grants=GRANTS)
    bearer, account = token(world)
    # Two intents of the credit pack (stackable: each its own), both fit when created.
    one, two = (
        create(world, bearer, amount=0, currency="", catalog_price_id=pack.price_id, request_id=r)
        for r in ("tab-1", "tab-2")
    )
    assert one.stripe_payment_intent_id != two.stripe_payment_intent_id
    confirm(world, one.stripe_payment_intent_id)
    confirm(world, two.stripe_payment_intent_id)
    assert signed_send(world, succeeded(world, one.stripe_payment_intent_id)) == 200
    assert world.balance(account, "tokens") == HUGE
    assert signed_send(world, succeeded(world, two.stripe_payment_intent_id)) == 200
    assert failed_events(world) == []
    assert world.balance(account, "tokens") == HUGE
    assert fully_refunded(world, two.stripe_payment_intent_id)
    assert not fully_refunded(world, one.stripe_payment_intent_id)
    read = get(world, bearer, two.payment_intent_id)
    assert read.refund_id and not read.purchase_id and not read.duplicate_of_purchase_id
    [notice] = notices(world, account, "payment_intent.duplicate_refunded")
    assert notice["reason"] == "CREDITS_NOT_STORABLE"
    [refund] = refunds_of(world, two.stripe_payment_intent_id)
    assert (refund["reason"], refund["id"]) == (None, notice["refund"])
    assert signed_send(world, succeeded(world, two.stripe_payment_intent_id)) == 200
    assert len(notices(world, account, "payment_intent.duplicate_refunded")) == 1
    assert len(refunds_of(world, two.stripe_payment_intent_id)) == 1


def test_a_free_checkout_whose_grant_no_longer_fits_completes_without_it(quiet: World):
    """A no-cost checkout (Stripe: `payment_status` `no_payment_required`, no payment) has
    nothing to refund: it completes, grants nothing, and the company is told all the same."""
    world = quiet
    world.price("gift", recurring=False, amount=0, stackable=True, grants=GRANTS)
    token, account = world.token()
    first = world.buy(token, "gift", request_id="tab-1").session.stripe_checkout_session_id
    later = world.buy(token, "gift", request_id="tab-2").session.stripe_checkout_session_id
    world.pay(first)
    world.pay(later)
    remote = world.stripe.v1.checkout.sessions.retrieve(later)
    assert (remote.payment_status, remote.payment_intent) == ("no_payment_required", None)
    assert signed_send(world, completed(world, first)) == 200
    assert world.balance(account, "tokens") == HUGE
    assert signed_send(world, completed(world, later)) == 200
    assert failed_events(world) == []
    assert world.balance(account, "tokens") == HUGE
    assert purchases(world, account) == [our_id(world, first)]
    [notice] = notices(world, account, "checkout.duplicate_refunded")
    assert notice["checkout_session_id"] == our_id(world, later)
    assert (notice["reason"], notice["credit_type"]) == ("CREDITS_NOT_STORABLE", "tokens")
    assert (notice["refund"], notice["refunded_payment_intent"]) == (None, None)
    assert signed_send(world, completed(world, later)) == 200  # redelivered: nothing again
    assert len(notices(world, account, "checkout.duplicate_refunded")) == 1
    assert world.balance(account, "tokens") == HUGE
    assert purchases(world, account) == [our_id(world, first)]
