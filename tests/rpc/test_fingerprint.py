"""The fingerprint's table of decimal fields names real string fields of the contract."""

from __future__ import annotations

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor

import billing.v1.catalog_pb2
import billing.v1.credit_pb2
import billing.v1.usage_pb2  # noqa: F401  (their files in the default pool)
from tollbooth.rpc.fingerprint import DECIMALS, plain_decimal


def test_every_decimal_the_fingerprint_rewrites_is_a_string_field_of_the_contract() -> None:
    pool = descriptor_pool.Default()
    for name in DECIMALS:
        message, field = name.rsplit(".", 1)
        found = pool.FindMessageTypeByName(message).fields_by_name[field]
        assert found.type == FieldDescriptor.TYPE_STRING, name


def test_plain_decimals_are_one_amount_and_anything_else_is_kept_as_sent() -> None:
    assert {plain_decimal(v) for v in ("10", "10.0", "010", "10.00", "0010.000")} == {"10"}
    assert plain_decimal("0.50") == "0.5"
    assert plain_decimal("0.0") == plain_decimal("000") == "0"
    assert plain_decimal("1e1") == "1e1"
    assert plain_decimal(" 10") == " 10"
    assert plain_decimal("") == ""


def test_output_only_fields_do_not_count_but_a_stripe_link_does() -> None:
    """A resource sent back as read (output-only fields filled in) is the same request; the
    explicit Stripe links (OPTIONAL: a request may set them, checked at Stripe) count."""
    from google.protobuf import timestamp_pb2

    from billing.v1 import catalog_pb2
    from tollbooth.rpc.fingerprint import fingerprint

    def product(**fields: object) -> catalog_pb2.CreateProductRequest:
        return catalog_pb2.CreateProductRequest(
            product=catalog_pb2.Product(name="Pro", **fields),  # type: ignore[arg-type]
            request_id="r1",
        )

    plain = str(fingerprint(product()))
    as_read = product(active=True, create_time=timestamp_pb2.Timestamp(seconds=1_700_000_000))
    assert str(fingerprint(as_read)) == plain
    assert str(fingerprint(product(stripe_product_id="prod_1"))) != plain
    assert str(fingerprint(product(description="other"))) != plain


def test_event_types_are_a_set_and_every_set_field_is_a_repeated_string() -> None:
    """An endpoint's event types in another order or repeated are the same request (the
    server keeps each type once); another type is not."""
    import billing.v1.notification_pb2 as n
    from tollbooth.rpc.fingerprint import SETS, fingerprint

    pool = descriptor_pool.Default()
    for name in SETS:
        message, field = name.rsplit(".", 1)
        found = pool.FindMessageTypeByName(message).fields_by_name[field]
        assert found.type == FieldDescriptor.TYPE_STRING and found.is_repeated, name

    def create(*types: str) -> n.CreateNotificationEndpointRequest:
        endpoint = n.NotificationEndpoint(url="https://hooks.example/x", event_types=types)
        return n.CreateNotificationEndpointRequest(endpoint=endpoint, request_id="r1")

    first = str(fingerprint(create("invoice.paid", "subscription.created")))
    assert str(fingerprint(create("subscription.created", "invoice.paid"))) == first
    assert str(fingerprint(create("invoice.paid", "invoice.paid", "subscription.created"))) == first
    assert str(fingerprint(create("invoice.paid"))) != first
