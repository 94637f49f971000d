"""The provider answering with something that is not a Stripe answer (what a proxy, a load
balancer or a broken connection in front of Stripe sends: a bare 429, an HTML 502/503 page,
bytes that are not JSON, JSON that is not a Stripe object), through Envoy on PostgreSQL:
HTTP 503 `PROVIDER_UNAVAILABLE`, never a 400 or a 500, no echo of what the provider sent, and
nothing changed: the retry under the same request_id makes the one checkout session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.checkout.support import Shop, start_shop

pytestmark = pytest.mark.envoy

CHECKOUT_PATH = "/v1/checkout/sessions"

ANSWERS = {
    "429-text": (429, b"Too Many Requests", "text/plain"),
    "502-html": (502, b"<html><body><h1>502 Bad Gateway</h1>nginx</body></html>", "text/html"),
    "503-html": (503, b"<html><body>Service Unavailable</body></html>", "text/html"),
    "200-garbage": (200, b"\x00\x01{not json", "application/json"),
    "200-json-list": (200, b"[1, 2, 3]", "application/json"),
    "200-json-null": (200, b"null", "application/json"),
    "200-no-object": (200, b'{"hello": "world"}', "application/json"),
    "400-html": (400, b"<html><body>400 Bad Request (proxy)</body></html>", "text/html"),
    "429-json-not-stripe": (429, b'{"message": "slow down"}', "application/json"),
}


@pytest.fixture(scope="module")
def pg_shop(pg_shared_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    shop = start_shop(tmp_path_factory.mktemp("garbage-shop"), pg_shared_url)
    yield shop
    shop.close()


def sessions_at_the_provider(shop: Shop) -> int:
    store = shop.sandbox.app.state.store
    with store.lock:
        return len(store.all("checkout.session"))


@pytest.mark.parametrize("answer", list(ANSWERS), ids=list(ANSWERS))
def test_a_non_stripe_answer_is_503_provider_unavailable_and_changes_nothing(
    pg_shop: Shop, answer: str
) -> None:
    status, body, content_type = ANSWERS[answer]
    key = f"garbage-{uuid.uuid4().hex[:8]}"
    pg_shop.price(key, group=key)
    token = pg_shop.token(key)
    request = {
        "items": [{"lookup_key": key}],
        "success_url": "https://app.example/ok",
        "request_id": f"{key}-1",
    }
    before = sessions_at_the_provider(pg_shop)
    pg_shop.sandbox.stalls.add(
        "POST", CHECKOUT_PATH, seconds=0, status=status, body=body, content_type=content_type
    )
    failed = pg_shop.request("POST", "/api/v1/checkout/sessions", request, token)
    assert (failed.status, failed.reason) == (503, "PROVIDER_UNAVAILABLE"), failed.body
    shown = failed.body.decode("utf-8", "replace")
    assert "html" not in shown.lower() and "hello" not in shown and "slow down" not in shown
    assert sessions_at_the_provider(pg_shop) == before
    assert pg_shop.billing(token)["plan"] == "free"

    made = pg_shop.request("POST", "/api/v1/checkout/sessions", request, token)
    assert made.status == 200, made.body
    again = pg_shop.request("POST", "/api/v1/checkout/sessions", request, token)
    assert again.json() == made.json()
    assert sessions_at_the_provider(pg_shop) == before + 1
