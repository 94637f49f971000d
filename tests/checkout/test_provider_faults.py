"""The provider failing (5xx) or late (answering after our timeout) on the calls the checkout
and portal RPCs make besides creating a session: the portal, the portal's configuration, and
expiring the open checkout another tab's request takes over. The caller gets UNAVAILABLE
`PROVIDER_UNAVAILABLE`, never INTERNAL; a retry with the same request_id completes it, and
nothing is created twice."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from billing.v1 import checkout_pb2
from tests.checkout.support import World, start_world
from tests.checkout.test_boundary import customer_of, open_sessions, tab
from tests.conftest import bearer_md
from tests.devstack import migrated_sqlite
from tests.helpers import error_reason

PORTAL = "/v1/billing_portal/sessions"
CONFIGURATIONS = "/v1/billing_portal/configurations"


@pytest.fixture
def impatient(tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """SQLite; the provider client gives up after 1 s and never retries by itself."""
    w = start_world(
        migrated_sqlite(tmp_path / "billing.db"),
        tmp_path,
        STRIPE_TIMEOUT_SEC="1",
        STRIPE_MAX_NETWORK_RETRIES="0",
    )
    yield w
    w.stop()


def portal(world: World, token: str, request_id: str = "portal-1", **options: bool) -> Any:
    return world.checkout.CreatePortalSession(
        checkout_pb2.CreatePortalSessionRequest(
            return_url="https://app.example/account",
            request_id=request_id,
            options=checkout_pb2.PortalOptions(**options),
        ),
        metadata=bearer_md(token),
        timeout=30,
    )


def unavailable(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
    return err.value


def works(call: Any) -> Any:
    """`call` once the fault is gone: a retry with the same request_id when the 1 s provider
    timeout passed under a loaded machine (idempotent: the same answer, nothing made twice)."""
    for attempt in range(3):
        try:
            return call()
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE or attempt == 2:
                raise
    raise AssertionError("unreachable")


def portal_sessions(world: World) -> int:
    store = world.sandbox.app.state.store
    with store.lock:
        return len(store.all("billing_portal.session"))


@pytest.mark.parametrize("method,path", [("POST", PORTAL), ("GET", CONFIGURATIONS)])
def test_the_portal_with_the_provider_answering_5xx_is_unavailable_then_works(
    impatient: World, method: str, path: str
) -> None:
    world = impatient
    world.price("pro")
    token, _ = world.token()
    world.billed(token, "pro")  # a paid subscription: something to manage
    world.sandbox.stalls.add(method, path, seconds=0, status=502)
    unavailable(lambda: portal(world, token, allow_cancel=False))
    made = works(lambda: portal(world, token, allow_cancel=False))
    assert made.url and made.portal_session_id.startswith("bps_")


def test_a_portal_answered_after_our_timeout_is_the_same_portal_on_retry(impatient: World) -> None:
    world = impatient
    world.price("pro")
    token, _ = world.token()
    world.billed(token, "pro")
    portal(world, token, request_id="warm")  # the configuration exists
    before = portal_sessions(world)
    stall = world.sandbox.stalls.add("POST", PORTAL, seconds=5.0, after=True)
    unavailable(lambda: portal(world, token))
    stall.release.set()
    again = works(lambda: portal(world, token))
    assert portal_sessions(world) == before + 1
    assert works(lambda: portal(world, token)).portal_session_id == again.portal_session_id


def test_a_takeover_whose_expire_fails_at_the_provider_is_unavailable_and_its_retry_completes(
    impatient: World,
) -> None:
    world = impatient
    world.price("pro", group="plan")
    world.price("team", group="plan", amount=9900)
    token, account = world.token()
    first = tab(world, token, "pro", "tab-1").session.stripe_checkout_session_id
    path = f"/v1/checkout/sessions/{first}/expire"
    world.sandbox.stalls.add("POST", path, seconds=0, status=500)
    unavailable(lambda: tab(world, token, "team", "tab-2"))
    customer = customer_of(world, account)
    assert open_sessions(world, customer) == [first]  # still payable, still ours
    second = tab(world, token, "team", "tab-2").session.stripe_checkout_session_id
    assert open_sessions(world, customer) == [second]
    # Late: the provider expired it, the answer was lost; the retry finds it expired.
    third_stall = world.sandbox.stalls.add(
        "POST", f"/v1/checkout/sessions/{second}/expire", seconds=5.0, after=True
    )
    unavailable(lambda: tab(world, token, "pro", "tab-3"))
    third_stall.release.set()
    third = tab(world, token, "pro", "tab-3").session.stripe_checkout_session_id
    assert open_sessions(world, customer) == [third]
    world.pay(third)
    world.settled()
    assert world.status(token).plan == "pro"


def test_a_takeover_whose_expire_the_provider_refuses_while_open_keeps_the_holder(
    impatient: World,
) -> None:
    """The provider refuses the expire with a 400 and the holder's session is still open (a
    session being paid at that moment, say). The slot is not handed over: the old session
    stays the account's one payable checkout, the new tab is told to retry (UNAVAILABLE), and
    no second session is made; the retry once the provider agrees completes the takeover."""
    world = impatient
    world.price("pro", group="plan")
    world.price("team", group="plan", amount=9900)
    token, account = world.token()
    first = tab(world, token, "pro", "tab-1").session.stripe_checkout_session_id
    path = f"/v1/checkout/sessions/{first}/expire"
    refusal = (
        b'{"error": {"type": "invalid_request_error", "message": "This Checkout Session is'
        b' being paid and cannot be expired."}}'
    )
    world.sandbox.stalls.add(
        "POST", path, seconds=0, status=400, body=refusal, content_type="application/json"
    )
    unavailable(lambda: tab(world, token, "team", "tab-2"))
    customer = customer_of(world, account)
    assert open_sessions(world, customer) == [first]
    second = tab(world, token, "team", "tab-2").session.stripe_checkout_session_id
    assert second != first
    assert open_sessions(world, customer) == [second]
    world.pay(second)
    world.settled()
    assert world.status(token).plan == "team"


def test_a_checkout_whose_first_attempt_stripe_failed_and_saved_completes_on_retry(
    impatient: World,
) -> None:
    """Stripe saves the 500 of a request it began under its idempotency key and answers every
    retry with that key the same 500 for 24 hours. Our key derives from the request_id, so a
    retry that sent the same key again could not complete the purchase for a day. The retry
    moves past a key Stripe answers with a saved failure: one session is handed out, and the
    one the failed attempt may have made (never shown to anyone) cannot be paid through us."""
    world = impatient
    world.price("pro", group="plan")
    token, account = world.token()
    world.sandbox.stalls.add("POST", "/v1/checkout/sessions", seconds=0, status=500, after=True)
    unavailable(lambda: world.buy(token, "pro", request_id="saved-500"))
    again = world.buy(token, "pro", request_id="saved-500")
    assert again.WhichOneof("next_action") == "session" and again.session.url
    handed = again.session.stripe_checkout_session_id
    customer = customer_of(world, account)
    made = world.stripe.v1.checkout.sessions.list(params={"customer": customer, "limit": 100})
    assert handed in [s.id for s in made.data] and len(made.data) == 2  # the failed one's too
    assert world.buy(token, "pro", request_id="saved-500") == again
    # The purchase completes through the session handed out.
    world.pay(handed)
    assert open_sessions(world, customer) == [s.id for s in made.data if s.id != handed]


def test_a_first_checkout_whose_customer_stripe_failed_and_saved_completes_on_retry(
    impatient: World,
) -> None:
    """The account's Stripe customer is created under a key derived from the account: a 500
    Stripe saved under it would block every checkout of the account for 24 hours."""
    world = impatient
    world.price("pro", group="plan")
    token, account = world.token()
    world.sandbox.stalls.add("POST", "/v1/customers", seconds=0, status=500, after=True)
    unavailable(lambda: world.buy(token, "pro", request_id="customer-500"))
    again = world.buy(token, "pro", request_id="customer-500")
    assert again.WhichOneof("next_action") == "session"
    customer = customer_of(world, account)
    assert world.stripe.v1.checkout.sessions.list(params={"customer": customer}).data


def test_a_retry_while_the_first_attempt_is_still_at_the_provider_withdraws_nothing(
    impatient: World,
) -> None:
    """Stripe answers a request whose idempotency key another request still in progress uses
    with 409 (`idempotency_key_in_use`). That is not a refusal of the checkout: the retry
    waits (backing off, within its time) while the intent stays, the first attempt completes,
    and the retry gets its session. Read as a refusal, the intent was withdrawn under the
    first attempt, which then failed: nothing for either to hand out."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    world = impatient
    world.price("pro", group="plan")
    token, account = world.token()
    stall = world.sandbox.stalls.add("POST", "/v1/checkout/sessions", seconds=5.0)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(lambda: world.buy(token, "pro", request_id="in-flight"))
        assert stall.entered.wait(10)
        retry = pool.submit(lambda: world.buy(token, "pro", request_id="in-flight"))
        time.sleep(0.3)  # the retry meets the first attempt in progress (409), and waits
        stall.release.set()
        done = first.result(timeout=30)
        assert retry.result(timeout=30) == done
    assert done.WhichOneof("next_action") == "session" and done.session.url
    assert world.buy(token, "pro", request_id="in-flight") == done
    made = world.stripe.v1.checkout.sessions.list(
        params={"customer": customer_of(world, account), "limit": 100}
    )
    assert [s.id for s in made.data] == [done.session.stripe_checkout_session_id]


@pytest.mark.parametrize("path", ["/v1/products", "/v1/prices"])
def test_a_price_whose_first_sync_stripe_failed_and_saved_is_sold_on_retry(
    impatient: World, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """A catalog price reaches Stripe on its first checkout, under a key derived from its id.
    Stripe failing that request midway (nothing made, the 500 saved under the key) must not
    stop the price being sold for the key's 24 hours."""
    import dataclasses

    from tollbooth.sandbox import api

    world = impatient
    world.price("pro", group="plan")
    token, _ = world.token()
    route = next(r for r in api.ROUTES if r.method == "POST" and r.pattern.match(path))
    failed: list[int] = []

    def once_failing(engine, params, **args):  # type: ignore[no-untyped-def]
        if not failed:
            failed.append(1)
            raise RuntimeError("Stripe failed midway")
        return route.handler(engine, params, **args)

    swapped = [
        dataclasses.replace(r, handler=once_failing) if r is route else r for r in api.ROUTES
    ]
    monkeypatch.setattr(api, "ROUTES", swapped)
    unavailable(lambda: world.buy(token, "pro", request_id="sync-500"))
    again = world.buy(token, "pro", request_id="sync-500")
    assert again.WhichOneof("next_action") == "session" and failed == [1]


def test_a_takeover_whose_expire_stripe_failed_and_saved_completes_on_retry(
    impatient: World,
) -> None:
    """Stripe saves the 500 of an expire it began under the expire's idempotency key (derived
    from the session) and replays it to every request with that key for 24 hours. Every later
    checkout of the group must expire that same holder first: sent again under that key, the
    group could not be bought for a day. The provider's session is the truth: one no longer
    open is taken over (its `checkout.session.expired` is held back here: the retry must not
    wait on it)."""
    world = impatient
    world.price("pro", group="plan")
    world.price("team", group="plan", amount=9900)
    token, account = world.token()
    first = tab(world, token, "pro", "tab-1").session.stripe_checkout_session_id
    world.gate.open.clear()  # the provider's events wait (Stripe may be minutes late)
    path = f"/v1/checkout/sessions/{first}/expire"
    world.sandbox.stalls.add("POST", path, seconds=0, status=500, after=True)
    unavailable(lambda: tab(world, token, "team", "tab-2"))
    customer = customer_of(world, account)
    assert open_sessions(world, customer) == []  # the provider did expire it
    second = tab(world, token, "team", "tab-2").session.stripe_checkout_session_id
    assert open_sessions(world, customer) == [second]
    world.gate.open.set()
    world.pay(second)
    world.settled()
    assert world.status(token).plan == "team"


def test_a_portal_configuration_whose_create_stripe_failed_and_saved_is_made_on_retry(
    impatient: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A portal configuration is created under a key derived from its options' digest, the
    same for every account asking for those options. Stripe failing that request midway
    (nothing made, the 500 saved under the key) must not stop every portal with those
    options for the key's 24 hours."""
    import dataclasses

    from tollbooth.sandbox import api

    world = impatient
    world.price("pro")
    token, _ = world.token()
    world.billed(token, "pro")
    route = next(r for r in api.ROUTES if r.method == "POST" and r.pattern.match(CONFIGURATIONS))
    failed: list[int] = []

    def once_failing(engine, params, **args):  # type: ignore[no-untyped-def]
        if not failed:
            failed.append(1)
            raise RuntimeError("Stripe failed midway")
        return route.handler(engine, params, **args)

    swapped = [
        dataclasses.replace(r, handler=once_failing) if r is route else r for r in api.ROUTES
    ]
    monkeypatch.setattr(api, "ROUTES", swapped)
    unavailable(lambda: portal(world, token, request_id="config-500", show_invoices=False))
    made = portal(world, token, request_id="config-500", show_invoices=False)
    assert made.url and made.portal_session_id.startswith("bps_") and failed == [1]
