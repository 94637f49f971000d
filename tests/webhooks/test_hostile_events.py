"""Signed events of unexpected shapes (issue 14, finding 5): stored, then ignored or failed
with a reason (2xx), or refused as unstorable (400); never 5xx. A hypothesis fuzz over the
Stripe object shapes the handlers read, and a 10,000-line renewal applied in the background."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.v1 import catalog_pb2
from tests.checkout.support import World, events_of, signed_send, start_world
from tests.conftest import WEBHOOK_SECRET
from tollbooth.app import inbox_worker
from tollbooth.db.models import BillingEffect, CreditGrant, StripeEvent, Subscription
from tollbooth.webhooks.signature import header

GRANTS = [
    catalog_pb2.CreditGrantSpec(
        credit_type="api_calls", amount="100", on_purchase=True, on_renewal=True
    )
]
TYPES = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.expired",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
    "charge.refunded",
]


@pytest.fixture
def quiet(database_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    w = start_world(database_url, tmp_path, deliver=False)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def shared_world(shared_database_url: str, tmp_path_factory) -> Iterator[World]:  # type: ignore[no-untyped-def]
    w = start_world(shared_database_url, tmp_path_factory.mktemp("hostile"), deliver=False)
    yield w
    w.stop()


def post(world: World, body: bytes) -> httpx.Response:
    return httpx.post(
        world.sidecar_url,
        content=body,
        headers={"Stripe-Signature": header(body, WEBHOOK_SECRET)},
        timeout=30,
    )


def stored(world: World, event_id: str) -> StripeEvent | None:
    with world.deps.db.transaction(readonly=True) as session:
        row = session.get(StripeEvent, event_id)
        if row is not None:
            session.expunge(row)
        return row


def event(kind: str, obj: Any, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"evt_h_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": kind,
        "livemode": False,
        "data": {"object": obj},
        **extra,
    }


HOSTILE_CASES = {
    "parent as a string": event(
        "invoice.paid", {"id": "in_1", "parent": "sub_x", "billing_reason": "subscription_cycle"}
    ),
    "lines as a string": event(
        "invoice.paid",
        {"id": "in_2", "subscription": "sub_x", "lines": "abc", "billing_reason": "x"},
    ),
    "quantity abc": event(
        "invoice.paid",
        {"id": "in_3", "subscription": "sub_x", "lines": {"data": [{"quantity": "abc"}]}},
    ),
    "40-char payment_status": event(
        "checkout.session.completed",
        {"id": "cs_test_x", "status": "complete", "payment_status": "p" * 40},
    ),
    "300-char subscription id": event(
        "customer.subscription.updated", {"id": "sub_" + "x" * 296, "customer": "cus_1"}
    ),
    "items as a number": event(
        "customer.subscription.updated", {"id": "sub_y", "items": 7, "customer": ["a"]}
    ),
    "object as a list": event("invoice.payment_failed", [1, 2, 3]),
    "a huge line list": event(
        "invoice.paid",
        {"id": "in_4", "subscription": "sub_x", "lines": {"data": [{"x": n} for n in range(5000)]}},
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CASES))
def test_a_signed_event_of_a_hostile_shape_is_stored_and_ignored_never_5xx(quiet: World, case: str):
    evt = HOSTILE_CASES[case]
    response = post(quiet, json.dumps(evt).encode())
    assert response.status_code == 200, response.text
    row = stored(quiet, evt["id"])
    assert row is not None and row.status in ("ignored", "pending")
    if row.status == "ignored":
        assert row.last_error  # the reason is recorded
    assert quiet.count(Subscription) == 0


# -- fuzz ---------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.text(min_size=200, max_size=400),
    st.sampled_from(["paid", "complete", "active", "subscription_cycle", "abc", "", "sub_1"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = [
    "id", "object", "status", "payment_status", "subscription", "customer", "parent",
    "lines", "items", "quantity", "billing_reason", "amount_paid", "currency", "charge",
    "invoice", "payment_intent", "amount_refunded", "refunded", "mode", "metadata",
    "current_period_start", "current_period_end", "attempt_count", "cancel_at_period_end",
]  # fmt: skip
objects = st.dictionaries(st.sampled_from(KEYS), values, max_size=10)


@pytest.mark.postgres
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(kind=st.sampled_from(TYPES), obj=st.one_of(objects, values), top=objects)
def test_fuzz_signed_events_of_hostile_shapes_never_answer_5xx(
    shared_world: World, kind: str, obj: Any, top: dict[str, Any]
):
    evt = {**{k: v for k, v in top.items() if k not in ("id", "type")}, **event(kind, obj)}
    if "livemode" in top:
        evt["livemode"] = top["livemode"]
    response = post(shared_world, json.dumps(evt).encode())
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        row = stored(shared_world, evt["id"])
        assert row is not None and row.status in ("applied", "ignored", "failed", "pending")


# -- a huge renewal -----------------------------------------------------------------------


def test_a_ten_thousand_line_renewal_is_stored_at_once_and_applied_by_the_worker(quiet: World):
    quiet.price("pro", grants=GRANTS)
    token, account = quiet.token()
    stripe_id = quiet.buy(token, "pro").session.stripe_checkout_session_id
    quiet.pay(stripe_id)
    assert (
        signed_send(
            quiet, json.dumps(events_of(quiet, "checkout.session.completed", stripe_id)[0]).encode()
        )
        == 200
    )
    sub_id = str(quiet.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    lines = [{"id": f"il_{n}", "object": "line_item", "quantity": 1} for n in range(10_000)]
    renewal = event(
        "invoice.paid",
        {
            "id": "in_huge_renewal",
            "object": "invoice",
            "billing_reason": "subscription_cycle",
            "parent": {"subscription_details": {"subscription": sub_id}},
            "lines": {"object": "list", "data": lines, "has_more": False},
        },
    )
    body = json.dumps(renewal).encode()
    assert len(body) < quiet.settings.max_body_bytes
    response = post(quiet, body)
    assert response.status_code == 200, response.text
    assert stored(quiet, renewal["id"]).status == "pending"  # type: ignore[union-attr]
    done = inbox_worker(quiet.deps).run_once()
    assert dict(done)[renewal["id"]].status == "applied"
    assert quiet.count(BillingEffect, BillingEffect.key == "invoice:in_huge_renewal") == 1
    # One renewal grant per recurring item of the subscription, not one per invoice line:
    assert quiet.count(CreditGrant, CreditGrant.billing_account_id == account) == 2
    assert quiet.balance(account, "api_calls") == "200"
