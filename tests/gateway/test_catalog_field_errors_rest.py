"""The catalog's field errors through Envoy read as over gRPC: an update mask path naming no
field is 400 FIELD_INVALID with `metadata.field` `update_mask` and `metadata.path` the path; a
field is named from the request (`product.name`); a string over its limit is 400 FIELD_INVALID
naming it, and nothing changes (tests/catalog/test_update_field_errors.py over gRPC)."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import SERVICE_KEY

SERVICE = {"x-api-key": SERVICE_KEY}


def key() -> str:
    return f"request_id={uuid.uuid4().hex}"


def info(resp) -> dict:  # type: ignore[no-untyped-def, type-arg]
    details = [d for d in resp.json().get("details", []) if d["@type"].endswith("ErrorInfo")]
    assert len(details) == 1, resp.body
    return details[0]


def made(stack) -> dict:  # type: ignore[no-untyped-def, type-arg]
    resp = stack.request(
        "POST", f"/mgt/v1/catalog/products?{key()}", {"name": "Kept", "description": "d"}, SERVICE
    )
    assert resp.status == 200, resp.body
    return resp.json()  # type: ignore[no-any-return]


def unchanged(stack, product: dict) -> None:  # type: ignore[no-untyped-def, type-arg]
    got = stack.request("GET", f"/mgt/v1/catalog/products/{product['product_id']}", None, SERVICE)
    assert (got.json()["name"], got.json()["description"]) == ("Kept", "d")
    assert got.json()["metadata"] == {}


@pytest.mark.parametrize("path", ["nmae", "description_x", "product_id.x"])
def test_an_unknown_mask_path_over_rest_is_field_invalid_naming_the_path(stack, path) -> None:  # type: ignore[no-untyped-def]
    product = made(stack)
    resp = stack.request(
        "PATCH",
        f"/mgt/v1/catalog/products/{product['product_id']}?update_mask={path}&{key()}",
        {"name": "Changed"},
        SERVICE,
    )
    assert resp.status == 400, resp.body
    assert info(resp)["reason"] == "FIELD_INVALID"
    assert info(resp)["metadata"] == {"field": "update_mask", "path": path}
    unchanged(stack, product)


@pytest.mark.parametrize(
    ("body", "mask", "field"),
    [
        ({"name": " "}, "name", "product.name"),
        ({"name": "n" * 201}, "name", "product.name"),
        ({"description": "d" * 5001}, "description", "product.description"),
        ({"metadata": {"k": "v" * 501}}, "metadata", "product.metadata['k']"),
        ({"metadata": {"k": "v" * 5000}}, "metadata", "product.metadata['k']"),
        ({"key": "k" * 41}, "key", "product.key"),
    ],
)
def test_a_field_error_over_rest_names_the_field_from_the_request(stack, body, mask, field) -> None:  # type: ignore[no-untyped-def]
    product = made(stack)
    resp = stack.request(
        "PATCH",
        f"/mgt/v1/catalog/products/{product['product_id']}?update_mask={mask}&{key()}",
        body,
        SERVICE,
    )
    assert resp.status == 400, resp.body
    reason = "FIELD_REQUIRED" if body == {"name": " "} else "FIELD_INVALID"
    assert (info(resp)["reason"], info(resp)["metadata"]["field"]) == (reason, field)
    unchanged(stack, product)
