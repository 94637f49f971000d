"""A read-modify-write update with a mask ignores what the mask does not name (AIP-134), even
when that text is no longer accepted: a product named with a bidirectional override or a C1
control before those were refused (stored text from before the rule) still takes an update of
its description with the product sent back as read. The rule still holds for what the mask
names: setting such a name is 400 FIELD_INVALID."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import update

from billing.v1 import catalog_pb2
from tests.catalog.support import call, product
from tests.conftest import SERVICE_KEY
from tests.helpers import error_field, error_reason
from tollbooth.db import Database
from tollbooth.db.models import Product


@pytest.mark.parametrize("stored", ["Pro \u202eLTR", "Pro\u0085NEL", "\u2067\u05e9\u05dd\u2069"])
def test_an_update_of_another_field_takes_back_stored_text_the_rule_now_refuses(
    channel: grpc.Channel, db: Database, stored: str
) -> None:
    made = product(channel, "Pro", description="old")
    with db.transaction() as session:  # stored before C1 and bidi controls were refused
        session.execute(update(Product).where(Product.id == made.product_id).values(name=stored))
    read = call(channel, "GetProduct", catalog_pb2.GetProductRequest(product_id=made.product_id))
    assert read.name == stored
    sent = catalog_pb2.Product()
    sent.CopyFrom(read)
    sent.description = "new"
    updated = call(
        channel,
        "UpdateProduct",
        catalog_pb2.UpdateProductRequest(
            product=sent, update_mask=field_mask_pb2.FieldMask(paths=["description"])
        ),
    )
    assert (updated.description, updated.name) == ("new", stored)

    with pytest.raises(grpc.RpcError) as err:  # naming it in the mask is still refused
        call(
            channel,
            "UpdateProduct",
            catalog_pb2.UpdateProductRequest(
                product=sent, update_mask=field_mask_pb2.FieldMask(paths=["name"])
            ),
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error_reason(err.value), error_field(err.value)) == ("FIELD_INVALID", "product.name")
    again = call(channel, "GetProduct", catalog_pb2.GetProductRequest(product_id=made.product_id))
    assert (again.name, again.description) == (stored, "new")


def test_a_full_mask_names_the_stored_text_and_refuses_it(
    channel: grpc.Channel, db: Database
) -> None:
    made = product(channel, "Pro")
    with db.transaction() as session:
        session.execute(
            update(Product).where(Product.id == made.product_id).values(name="Pro \u202eLTR")
        )
    read = call(channel, "GetProduct", catalog_pb2.GetProductRequest(product_id=made.product_id))
    with pytest.raises(grpc.RpcError) as err:
        call(
            channel,
            "UpdateProduct",
            catalog_pb2.UpdateProductRequest(
                product=read, update_mask=field_mask_pb2.FieldMask(paths=["*"])
            ),
        )
    assert (error_reason(err.value), error_field(err.value)) == ("FIELD_INVALID", "product.name")


def test_the_resource_id_outside_the_mask_keeps_the_full_rule(channel: grpc.Channel) -> None:
    sent = catalog_pb2.Product(product_id="prod_\u202eevil", name="x")
    with pytest.raises(grpc.RpcError) as err:
        call(
            channel,
            "UpdateProduct",
            catalog_pb2.UpdateProductRequest(
                product=sent, update_mask=field_mask_pb2.FieldMask(paths=["name"])
            ),
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error_reason(err.value), error_field(err.value)) == (
        "FIELD_INVALID",
        "product.product_id",
    )


def test_through_envoy_the_product_as_read_patches_its_description(stack) -> None:  # type: ignore[no-untyped-def]
    """The same read-modify-write as REST sends it: the GET's JSON back, update_mask in the
    query."""
    service = {"x-api-key": SERVICE_KEY}
    made = stack.request(
        "POST", f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}", {"name": "P"}, service
    )
    assert made.status == 200, made.body
    product_id = made.json()["product_id"]
    stored = "Pro \u202eLTR"
    with stack.deps.db.transaction() as session:
        session.execute(update(Product).where(Product.id == product_id).values(name=stored))
    read = stack.request("GET", f"/mgt/v1/catalog/products/{product_id}", None, service)
    assert read.status == 200 and read.json()["name"] == stored, read.body
    body = {**read.json(), "description": "new"}
    del body["product_id"]  # the URL binds it (a body naming it is refused)
    resp = stack.request(
        "PATCH",
        f"/mgt/v1/catalog/products/{product_id}?update_mask=description"
        f"&request_id={uuid.uuid4().hex}",
        body,
        service,
    )
    assert resp.status == 200, resp.body
    assert (resp.json()["name"], resp.json()["description"]) == (stored, "new")
