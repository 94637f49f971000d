"""An update mask means the same through Envoy as over gRPC. Paths are case-sensitive proto
names; the REST query takes them in snake_case or lowerCamelCase (the JSON spelling). Envoy's
transcoder folds any other spelling into a field name (`NAME` arrived as `name`), so a mask that
gRPC refuses (`paths: ["NAME"]`, "names unknown field") was applied over REST. The gateway now
marks such a value and the server refuses it the way gRPC does: 400, field `update_mask`, with
the same reason, and nothing changes."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2

from billing.v1 import catalog_pb2, catalog_pb2_grpc
from tests.conftest import SERVICE_KEY, SERVICE_MD
from tests.helpers import error_reason

SERVICE = {"x-api-key": SERVICE_KEY}


def key() -> str:
    return f"request_id={uuid.uuid4().hex}"


def info(resp) -> dict:  # type: ignore[no-untyped-def]
    details = [d for d in resp.json().get("details", []) if d["@type"].endswith("ErrorInfo")]
    assert len(details) == 1, resp.body
    return details[0]


def made(stack) -> dict:  # type: ignore[no-untyped-def]
    resp = stack.request(
        "POST",
        f"/mgt/v1/catalog/products?{key()}",
        {"name": "Spelt", "description": "keep"},
        SERVICE,
    )
    assert resp.status == 200, resp.body
    return resp.json()


def grpc_refusal(stack, product_id: str, path: str) -> tuple[grpc.StatusCode, str | None]:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as ch:
        stub = catalog_pb2_grpc.CatalogServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.UpdateProduct(
                catalog_pb2.UpdateProductRequest(
                    product=catalog_pb2.Product(product_id=product_id, name="Changed"),
                    update_mask=field_mask_pb2.FieldMask(paths=[path]),
                    request_id=uuid.uuid4().hex,
                ),
                metadata=SERVICE_MD,
            )
        return err.value.code(), error_reason(err.value)


@pytest.mark.parametrize("mask", ["NAME", "Name", "nAME", "name,DESCRIPTION", "Description"])
def test_a_mask_in_a_spelling_grpc_refuses_is_refused_over_rest_too(stack, mask):  # type: ignore[no-untyped-def]
    product = made(stack)
    first = mask.split(",")[-1]
    code, reason = grpc_refusal(stack, product["product_id"], first)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    resp = stack.request(
        "PATCH",
        f"/mgt/v1/catalog/products/{product['product_id']}?update_mask={mask}&{key()}",
        {"name": "Changed", "description": ""},
        SERVICE,
    )
    assert resp.status == 400, resp.body
    assert (info(resp)["reason"], info(resp)["metadata"]["field"]) == (reason, "update_mask")
    got = stack.request("GET", f"/mgt/v1/catalog/products/{product['product_id']}", None, SERVICE)
    assert (got.json()["name"], got.json()["description"]) == ("Spelt", "keep")


@pytest.mark.parametrize("mask", ["name", "description,name", "descriptionX"])
def test_a_mask_gives_the_same_answer_over_rest_and_grpc_when_spelt_as_the_contract(stack, mask):  # type: ignore[no-untyped-def]
    """The control: snake_case paths are applied (or refused as unknown) alike."""
    product = made(stack)
    resp = stack.request(
        "PATCH",
        f"/mgt/v1/catalog/products/{product['product_id']}?update_mask={mask}&{key()}",
        {"name": "Changed", "description": "new"},
        SERVICE,
    )
    if mask == "descriptionX":
        code, reason = grpc_refusal(stack, product["product_id"], mask)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and resp.status == 400, resp.body
        assert info(resp)["reason"] == reason
    else:
        assert resp.status == 200, resp.body
        assert resp.json()["name"] == "Changed"
        assert resp.json()["description"] == ("new" if "description" in mask else "keep")


@pytest.mark.parametrize(
    ("route", "body", "mask"),
    [
        ("prices/price_nothing", {"nickname": "n"}, "creditGrants,NICKNAME"),
        ("prices/price_nothing", {"nickname": "n"}, "recurring.IntervalCount"),
        ("products/prod_nothing", {"name": "n"}, "stripe_Product_id"),
    ],
)
def test_a_miscased_mask_is_refused_on_the_catalog_routes_before_any_lookup(
    stack, route, body, mask
):  # type: ignore[no-untyped-def]
    resp = stack.request(
        "PATCH", f"/mgt/v1/catalog/{route}?update_mask={mask}&{key()}", body, SERVICE
    )
    assert resp.status == 400, resp.body
    assert info(resp)["metadata"]["field"] == "update_mask"


def test_lower_camel_case_paths_still_apply_over_rest(stack):  # type: ignore[no-untyped-def]
    """The JSON spelling of a path (`subscriptionGroup`) is the REST mask's own: applied. (A
    price: a product's one such path, `stripeProductId`, is looked up at Stripe, which this
    stack has none of.)"""
    product = made(stack)
    price = stack.request(
        "POST",
        f"/mgt/v1/catalog/prices?{key()}",
        {
            "product_id": product["product_id"],
            "currency": "usd",
            "unit_amount": 100,
            "type": "PRICE_TYPE_ONE_TIME",
        },
        SERVICE,
    )
    assert price.status == 200, price.body
    resp = stack.request(
        "PATCH",
        f"/mgt/v1/catalog/prices/{price.json()['price_id']}"
        f"?update_mask=subscriptionGroup,nickname&{key()}",
        {"nickname": "Camel", "subscription_group": "plans"},
        SERVICE,
    )
    assert resp.status == 200, resp.body
    assert (resp.json()["nickname"], resp.json()["subscription_group"]) == ("Camel", "plans")


@pytest.mark.parametrize("mask", ["%20name", "name%20", "description,%20name"])
def test_a_mask_path_with_blanks_around_it_is_refused_and_changes_nothing(stack, mask):  # type: ignore[no-untyped-def]
    """` name` is no field name (paths are exact, as gRPC takes them): it was trimmed and
    applied, so the document's pattern for update_mask and the server disagreed."""
    product = made(stack)
    resp = stack.request(
        "PATCH",
        f"/mgt/v1/catalog/products/{product['product_id']}?update_mask={mask}&{key()}",
        {"name": "Changed", "description": "new"},
        SERVICE,
    )
    assert resp.status == 400, resp.body
    assert info(resp)["reason"] == "FIELD_INVALID"
    assert info(resp)["metadata"]["field"] == "update_mask"
    got = stack.request("GET", f"/mgt/v1/catalog/products/{product['product_id']}", None, SERVICE)
    assert (got.json()["name"], got.json()["description"]) == ("Spelt", "keep")


def test_a_mask_path_with_blanks_around_it_is_refused_over_grpc(stack):  # type: ignore[no-untyped-def]
    product = made(stack)
    code, reason = grpc_refusal(stack, product["product_id"], " name")
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
