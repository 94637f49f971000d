"""The catalog through Envoy, as operators and browsers use it."""

from __future__ import annotations

import uuid

from tests.conftest import SERVICE_KEY

SERVICE = {"x-api-key": SERVICE_KEY}


def key() -> str:
    """A request_id query parameter (the body of these RPCs is the resource itself)."""
    return f"request_id={uuid.uuid4().hex}"


def bearer(stack, principal: str = "acct-42", scopes=None) -> dict[str, str]:  # type: ignore[no-untyped-def]
    body = {"principal_id": principal}
    if scopes is not None:
        body["scopes"] = scopes
    token = stack.request("POST", "/mgt/v1/token/issue", body, SERVICE).json()["access_token"]
    return {"authorization": f"Bearer {token}"}


def product(stack, name: str) -> str:  # type: ignore[no-untyped-def]
    resp = stack.request("POST", f"/mgt/v1/catalog/products?{key()}", {"name": name}, SERVICE)
    assert resp.status == 200, resp.body
    return resp.json()["product_id"]


def price(stack, product_id: str, amount: int, **extra) -> dict:  # type: ignore[no-untyped-def, type-arg]
    body = {
        "product_id": product_id,
        "currency": "usd",
        "unit_amount": amount,
        "lookup_key": f"k-{uuid.uuid4().hex[:8]}",
        **extra,
    }
    resp = stack.request("POST", f"/mgt/v1/catalog/prices?{key()}", body, SERVICE)
    assert resp.status == 200, resp.body
    return resp.json()


def test_browser_lists_active_prices_in_order_without_archived(stack):  # type: ignore[no-untyped-def]
    pid = product(stack, "Pro")
    late = price(stack, pid, 3000, position=30)
    early = price(stack, pid, 1000, position=10)
    monthly = price(
        stack, pid, 2000, position=20, recurring={"interval": "RECURRING_INTERVAL_MONTH"}
    )
    middle = price(stack, pid, 1500, position=20)  # ties with `monthly`: creation order decides
    archived = stack.request(
        "POST",
        f"/mgt/v1/catalog/prices/{monthly['price_id']}:archive",
        {"request_id": uuid.uuid4().hex},
        SERVICE,
    )
    assert archived.status == 200 and archived.json()["active"] is False

    resp = stack.request("GET", f"/api/v1/catalog/prices?product_id={pid}", headers=bearer(stack))
    assert resp.status == 200
    listed = [p["price_id"] for p in resp.json()["prices"]]
    assert listed == [early["price_id"], middle["price_id"], late["price_id"]]
    assert {p["hint"] for p in resp.json()["prices"]} == {"PURCHASE_HINT_BUY"}
    assert resp.json()["prices"][0]["unit_amount"] == "1000"  # int64 is a JSON string


def test_operator_sees_archived_prices_with_include_inactive(stack):  # type: ignore[no-untyped-def]
    pid = product(stack, "Ops")
    kept, gone = price(stack, pid, 100), price(stack, pid, 200)
    stack.request(
        "POST",
        f"/mgt/v1/catalog/prices/{gone['price_id']}:archive",
        {"request_id": uuid.uuid4().hex},
        SERVICE,
    )
    resp = stack.request(
        "GET", f"/mgt/v1/catalog/prices?product_id={pid}&include_inactive=true", headers=SERVICE
    )
    assert resp.status == 200
    assert [p["price_id"] for p in resp.json()["prices"]] == [kept["price_id"], gone["price_id"]]


def test_list_prices_without_product_id_is_400(stack):  # type: ignore[no-untyped-def]
    resp = stack.request("GET", "/api/v1/catalog/prices", headers=bearer(stack))
    assert resp.status == 400
    assert resp.reason == "FIELD_REQUIRED"


def test_public_products_are_listed_and_archived_ones_hidden(stack):  # type: ignore[no-untyped-def]
    live, dead = product(stack, "Live"), product(stack, "Dead")
    stack.request(
        "POST",
        f"/mgt/v1/catalog/products/{dead}:archive",
        {"request_id": uuid.uuid4().hex},
        SERVICE,
    )
    resp = stack.request("GET", "/api/v1/catalog/products?page_size=100", headers=bearer(stack))
    ids = [p["product_id"] for p in resp.json()["products"]]
    assert live in ids and dead not in ids


def test_bearer_cannot_create_catalog_entries(stack):  # type: ignore[no-untyped-def]
    resp = stack.request("POST", "/mgt/v1/catalog/products", {"name": "Nope"}, bearer(stack))
    assert resp.status == 403


def test_bearer_cannot_list_through_mgt_path(stack):  # type: ignore[no-untyped-def]
    resp = stack.request("GET", "/mgt/v1/catalog/products", headers=bearer(stack))
    assert resp.status == 403


def test_price_amount_cannot_change_through_rest(stack):  # type: ignore[no-untyped-def]
    pid = product(stack, "Immutable")
    p = price(stack, pid, 100)
    resp = stack.request(
        "PATCH",
        f"/mgt/v1/catalog/prices/{p['price_id']}?update_mask=unit_amount&{key()}",
        {"unit_amount": 999},
        SERVICE,
    )
    assert resp.status == 400
    assert resp.reason == "PRICE_IMMUTABLE"
