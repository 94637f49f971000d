"""The provider boundary of CreatePaymentIntent: no transaction open during the provider call,
and a retry after a timeout finds the intent the first attempt created (one at the provider)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import sqlalchemy as sa

from tests.checkout.support import World, start_world, transactions_open
from tests.helpers import error_reason
from tests.payments.support import create, token
from tollbooth.db.payment_intents import PaymentIntent

PATH = "/v1/payment_intents"


@pytest.fixture
def impatient_world(tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """SQLite; the provider client gives up after 1 s and never retries by itself."""
    from tests.devstack import migrated_sqlite

    w = start_world(
        migrated_sqlite(tmp_path / "billing.db"),
        tmp_path,
        STRIPE_TIMEOUT_SEC="1",
        STRIPE_MAX_NETWORK_RETRIES="0",
    )
    yield w
    w.stop()


def test_a_retry_after_a_provider_timeout_gets_the_same_intent(impatient_world: World) -> None:
    world = impatient_world
    bearer, account = token(world)
    # The provider creates the intent but answers after the client gave up.
    stall = world.sandbox.stalls.add("POST", PATH, seconds=5.0, after=True)
    with pytest.raises(grpc.RpcError) as err:
        create(world, bearer, request_id="pay-1")
    assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
    stall.release.set()
    with world.deps.db.transaction(readonly=True) as session:
        left = session.scalars(
            sa.select(PaymentIntent.status).where(PaymentIntent.billing_account_id == account)
        ).all()
    assert list(left) == ["pending"]  # recorded before the call, completed by the retry
    again = create(world, bearer, request_id="pay-1")
    created = world.stripe.v1.payment_intents.list(params={"limit": 100}).data
    assert [pi.id for pi in created] == [again.stripe_payment_intent_id]
    assert again.client_secret.startswith(again.stripe_payment_intent_id)


@pytest.mark.postgres
def test_no_transaction_is_open_during_the_provider_call_on_postgres(pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    world = start_world(pg_url, tmp_path)
    try:
        bearer, _ = token(world)
        world.settled()
        world.gate.open.clear()  # no webhook transaction runs meanwhile: only ours could be open
        stall = world.sandbox.stalls.add("POST", PATH, seconds=30.0)
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(create, world, bearer)
            assert stall.entered.wait(10)
            assert transactions_open(world.deps.db.url) == 0
            assert not pending.done()
            stall.release.set()
            assert pending.result(timeout=30).client_secret
    finally:
        world.gate.open.set()
        world.stop()


def test_a_retry_after_stripe_saved_a_500_under_the_key_gets_a_payable_intent(
    impatient_world: World,
) -> None:
    """Stripe answers every retry of a request it began and failed (500) with that saved 500
    while the key lives (24 h). A retry moves past such a key: the buyer gets one intent to
    pay; the one the failed attempt made has never been shown (no client secret given)."""
    world = impatient_world
    bearer, account = token(world)
    world.sandbox.stalls.add("POST", PATH, seconds=0, status=500, after=True)
    with pytest.raises(grpc.RpcError) as err:
        create(world, bearer, request_id="pay-500")
    assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
    again = create(world, bearer, request_id="pay-500")
    assert again.client_secret.startswith(again.stripe_payment_intent_id)
    created = world.stripe.v1.payment_intents.list(params={"limit": 100}).data
    assert again.stripe_payment_intent_id in [pi.id for pi in created] and len(created) == 2
    assert create(world, bearer, request_id="pay-500") == again
