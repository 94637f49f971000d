"""Products through a real gRPC server, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from billing.v1 import catalog_pb2
from tests.catalog.support import bearer_metadata, call, fails, product

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def update(channel, product_id, paths=(), **fields):  # type: ignore[no-untyped-def]
    return call(
        channel,
        "UpdateProduct",
        catalog_pb2.UpdateProductRequest(
            product=catalog_pb2.Product(product_id=product_id, **fields),
            update_mask=field_mask_pb2.FieldMask(paths=list(paths)),
        ),
    )


def get(channel, product_id):  # type: ignore[no-untyped-def]
    return call(channel, "GetProduct", catalog_pb2.GetProductRequest(product_id=product_id))


def test_created_product_is_active_and_readable_with_all_fields(channel):  # type: ignore[no-untyped-def]
    created = product(
        channel,
        "Pro",
        description="For teams",
        metadata={"tier": "pro"},
        entitlements=[
            catalog_pb2.Entitlement(feature="sso"),
            catalog_pb2.Entitlement(feature="seats", value="10"),
        ],
    )
    assert created.product_id.startswith("prod_")
    assert created.active
    assert created.create_time.seconds > 0
    fetched = get(channel, created.product_id)
    assert fetched == created
    assert fetched.metadata == {"tier": "pro"}
    assert [(e.feature, e.value) for e in fetched.entitlements] == [("sso", ""), ("seats", "10")]


def test_output_only_fields_in_create_are_ignored(channel):  # type: ignore[no-untyped-def]
    created = product(channel, "Pro", product_id="prod_chosen", active=False)
    assert created.product_id != "prod_chosen"
    assert created.active


def test_product_without_name_is_field_required(channel):  # type: ignore[no-untyped-def]
    fails(INVALID, "FIELD_REQUIRED", product, channel, "  ")


def test_duplicate_entitlement_feature_is_invalid(channel):  # type: ignore[no-untyped-def]
    fails(
        INVALID,
        "INVALID_ARGUMENT",
        product,
        channel,
        "Pro",
        entitlements=[catalog_pb2.Entitlement(feature="sso")] * 2,
    )


def test_get_unknown_product_is_not_found(channel):  # type: ignore[no-untyped-def]
    fails(grpc.StatusCode.NOT_FOUND, "NOT_FOUND", get, channel, "prod_missing")


def test_update_with_mask_changes_only_named_fields(channel):  # type: ignore[no-untyped-def]
    created = product(channel, "Pro", description="old", metadata={"a": "1"})
    updated = update(
        channel, created.product_id, ["description"], name="ignored", description="new"
    )
    assert updated.description == "new"
    assert updated.name == "Pro"
    assert updated.metadata == {"a": "1"}
    assert get(channel, created.product_id).description == "new"


def test_update_without_mask_changes_only_the_fields_given(channel):  # type: ignore[no-untyped-def]
    created = product(
        channel,
        "Pro",
        description="old",
        metadata={"a": "1"},
        entitlements=[catalog_pb2.Entitlement(feature="sso")],
        key="pro",
    )
    updated = update(channel, created.product_id, name="Team")
    assert updated.name == "Team"
    assert updated.description == "old"
    assert dict(updated.metadata) == {"a": "1"}
    assert [e.feature for e in updated.entitlements] == ["sso"]
    assert updated.key == "pro"
    assert updated.position == created.position


def test_update_with_star_mask_replaces_every_mutable_field(channel):  # type: ignore[no-untyped-def]
    created = product(channel, "Pro", description="old", metadata={"a": "1"})
    updated = update(channel, created.product_id, ["*"], name="Team")
    assert updated.name == "Team"
    assert updated.description == ""
    assert dict(updated.metadata) == {}
    assert updated.position == created.position  # 0 means "not given"


def test_update_naming_a_field_in_the_mask_clears_it(channel):  # type: ignore[no-untyped-def]
    created = product(channel, "Pro", description="old", metadata={"a": "1"})
    updated = update(channel, created.product_id, ["description"])
    assert updated.description == "" and dict(updated.metadata) == {"a": "1"}


def test_product_keys_are_unique(channel):  # type: ignore[no-untyped-def]
    product(channel, "Pro", key="pro")
    fails(grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS", product, channel, "Other", key="pro")
    fails(INVALID, "INVALID_ARGUMENT", product, channel, "Bad", key="bad key")


def test_update_ignores_output_only_paths_and_refuses_unknown_ones(channel):  # type: ignore[no-untyped-def]
    created = product(channel, "Pro")
    updated = update(channel, created.product_id, ["active", "name"], name="Team", active=False)
    assert updated.active and updated.name == "Team"
    fails(INVALID, "FIELD_INVALID", update, channel, created.product_id, ["colour"])


def test_an_unknown_mask_path_is_not_echoed_whole(channel):  # type: ignore[no-untyped-def]
    """README "Input rules": errors never echo more than 64 characters of an input."""
    created = product(channel, "Pro")
    err = fails(INVALID, "FIELD_INVALID", update, channel, created.product_id, ["c" * 900])
    assert "c" * 65 not in (err.details() or "")
    assert "c" * 65 not in str(err.trailing_metadata())


def test_update_unknown_product_is_not_found(channel):  # type: ignore[no-untyped-def]
    fails(grpc.StatusCode.NOT_FOUND, "NOT_FOUND", update, channel, "prod_missing", name="X")


def test_archive_hides_nothing_from_get_and_is_idempotent(channel):  # type: ignore[no-untyped-def]
    created = product(channel, "Pro")
    request = catalog_pb2.ArchiveProductRequest(product_id=created.product_id)
    archived = call(channel, "ArchiveProduct", request)
    assert not archived.active
    again = call(channel, "ArchiveProduct", request)
    assert again == archived  # unchanged, update_time included
    assert not get(channel, created.product_id).active


def test_bearer_cannot_create_products(channel):  # type: ignore[no-untyped-def]
    fails(
        grpc.StatusCode.PERMISSION_DENIED,
        "SERVICE_KEY_REQUIRED",
        call,
        channel,
        "CreateProduct",
        catalog_pb2.CreateProductRequest(product=catalog_pb2.Product(name="X")),
        bearer_metadata(channel),
    )


def test_metadata_the_provider_would_refuse_is_refused_on_products_and_prices(channel):  # type: ignore[no-untyped-def]
    """A product's metadata reaches its Stripe product beside `tollbooth_product_id`, so it
    follows Stripe's rules as a price's and an account's do (one helper): keys of 1-40
    characters without `[` or `]`, values of at most 500, at most 49 keys of its own (50 with
    the provider's key), and not that key itself. Refused on create and update (a key or value
    over its length FIELD_INVALID, the rest INVALID_ARGUMENT; field product.metadata or
    product.metadata['k']), nothing written."""
    from tests.catalog.support import price

    made = product(channel, "Meta", metadata={"a": "1"})
    most = {f"k{i}": "v" for i in range(49)}
    bad = [
        ({"a[b]": "v"}, "INVALID_ARGUMENT"),
        ({"x]": "v"}, "INVALID_ARGUMENT"),
        ({"k" * 41: "v"}, "FIELD_INVALID"),
        ({"k": "v" * 501}, "FIELD_INVALID"),
        ({**most, "one": "more"}, "INVALID_ARGUMENT"),
        ({"tollbooth_product_id": "prod_other"}, "INVALID_ARGUMENT"),
    ]
    for metadata, reason in bad:
        err = fails(INVALID, reason, product, channel, "Meta", metadata=metadata)
        assert "metadata" in (err.details() or "")
        fails(
            INVALID,
            reason,
            update,
            channel,
            made.product_id,
            ["metadata"],
            metadata=metadata,
        )
    assert dict(get(channel, made.product_id).metadata) == {"a": "1"}
    assert len(update(channel, made.product_id, ["metadata"], metadata=most).metadata) == 49
    for metadata, reason in (
        ({"a[b]": "v"}, "INVALID_ARGUMENT"),
        ({"k" * 41: "v"}, "FIELD_INVALID"),
    ):
        fails(INVALID, reason, price, channel, made.product_id, metadata=metadata)
    assert price(channel, made.product_id, metadata={"k": "v"}).metadata == {"k": "v"}
