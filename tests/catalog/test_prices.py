"""Prices through a real gRPC server, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from billing.v1 import catalog_pb2
from tests.catalog.support import MONTHLY, call, fails, price, product
from tests.helpers import error_field

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def get(channel, price_id):  # type: ignore[no-untyped-def]
    return call(channel, "GetPrice", catalog_pb2.GetPriceRequest(price_id=price_id))


def update(channel, price_id, paths=(), **fields):  # type: ignore[no-untyped-def]
    return call(
        channel,
        "UpdatePrice",
        catalog_pb2.UpdatePriceRequest(
            price=catalog_pb2.Price(price_id=price_id, **fields),
            update_mask=field_mask_pb2.FieldMask(paths=list(paths)),
        ),
    )


def archive(channel, price_id):  # type: ignore[no-untyped-def]
    return call(channel, "ArchivePrice", catalog_pb2.ArchivePriceRequest(price_id=price_id))


def grant(amount: str, **fields) -> catalog_pb2.CreditGrantSpec:  # type: ignore[no-untyped-def]
    fields.setdefault("on_purchase", True)
    return catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount=amount, **fields)


@pytest.fixture
def prod(channel):  # type: ignore[no-untyped-def]
    return product(channel, "Pro").product_id


def test_recurring_price_round_trips_with_normalised_values(channel, prod):  # type: ignore[no-untyped-def]
    created = price(
        channel,
        prod,
        currency="EUR",
        unit_amount=2900,
        type=catalog_pb2.PRICE_TYPE_RECURRING,
        recurring=MONTHLY,
        lookup_key="pro_monthly",
        stackable=False,
        subscription_group="plan",
        credit_grants=[grant("0100.50", on_renewal=True, expires_after_seconds=3600, priority=2)],
        entitlements=[catalog_pb2.Entitlement(feature="sso")],
        nickname="Monthly",
        metadata={"k": "v"},
    )
    assert created.price_id.startswith("price_") and created.active
    assert created.currency == "eur"
    assert created.recurring.interval == catalog_pb2.RECURRING_INTERVAL_MONTH
    assert created.recurring.interval_count == 1  # 0 means 1
    assert created.credit_grants[0].amount == "100.5"
    assert created.credit_grants[0].on_renewal and created.credit_grants[0].priority == 2
    assert created.hint == catalog_pb2.PURCHASE_HINT_UNSPECIFIED  # service caller
    assert get(channel, created.price_id) == created


def test_one_time_price_has_no_recurring(channel, prod):  # type: ignore[no-untyped-def]
    created = price(channel, prod, unit_amount=0)
    assert created.type == catalog_pb2.PRICE_TYPE_ONE_TIME
    assert not created.HasField("recurring")
    assert created.unit_amount == 0  # free is a valid amount


def test_output_only_price_fields_in_create_are_ignored(channel, prod):  # type: ignore[no-untyped-def]
    created = price(
        channel,
        prod,
        price_id="price_chosen",
        active=False,
        hint=catalog_pb2.PURCHASE_HINT_CURRENT,
    )
    assert created.price_id != "price_chosen"
    assert created.active
    assert created.hint == catalog_pb2.PURCHASE_HINT_UNSPECIFIED


def test_invalid_price_is_refused_and_creates_nothing(channel, prod):  # type: ignore[no-untyped-def]
    # The full table of rules is in test_fields.py; this proves they reach the wire.
    cases = [
        ({"type": catalog_pb2.PRICE_TYPE_RECURRING}, "FIELD_REQUIRED"),
        ({"recurring": MONTHLY}, "INVALID_ARGUMENT"),
        ({"currency": "dollars"}, "CURRENCY_INVALID"),
        ({"unit_amount": -1}, "INVALID_ARGUMENT"),
        ({"unit_amount": 100_000_000}, "PRICE_AMOUNT_INVALID"),  # the provider's 8 digits
        ({"unit_amount": 2**63 - 1}, "PRICE_AMOUNT_INVALID"),
        # Stripe refuses a three-decimal currency's amount unless its last digit is 0.
        ({"currency": "kwd", "unit_amount": 1005}, "PRICE_AMOUNT_INVALID"),
        ({"currency": "BHD", "unit_amount": 1}, "PRICE_AMOUNT_INVALID"),
        ({"credit_grants": [grant("1", on_renewal=True)]}, "INVALID_ARGUMENT"),
        ({"entitlements": [catalog_pb2.Entitlement(value="x")]}, "FIELD_REQUIRED"),
    ]
    for fields, reason in cases:
        fails(INVALID, reason, price, channel, prod, **fields)
    listed = call(
        channel, "ListPrices", catalog_pb2.ListPricesRequest(product_id=prod, include_inactive=True)
    )
    assert list(listed.prices) == []


def test_the_providers_largest_unit_amount_is_accepted(channel, prod):  # type: ignore[no-untyped-def]
    assert price(channel, prod, unit_amount=99_999_999).unit_amount == 99_999_999


def test_a_three_decimal_amount_names_unit_amount_and_one_ending_in_zero_is_taken(channel, prod):  # type: ignore[no-untyped-def]
    err = fails(
        INVALID, "PRICE_AMOUNT_INVALID", price, channel, prod, currency="kwd", unit_amount=1005
    )
    assert error_field(err) == "price.unit_amount"
    assert "kwd" in (err.details() or "")
    created = price(channel, prod, currency="KWD", unit_amount=1010)
    assert (created.currency, created.unit_amount) == ("kwd", 1010)


def test_bad_credit_amounts_are_amount_invalid(channel, prod):  # type: ignore[no-untyped-def]
    for amount in ("0", "-5", "NaN", "Infinity", "1E+999999", "1" * 21):
        fails(INVALID, "AMOUNT_INVALID", price, channel, prod, credit_grants=[grant(amount)])


def test_a_grant_expiry_past_a_century_is_refused_at_create_and_update(channel, prod):  # type: ignore[no-untyped-def]
    # A purchase dates the grant's expiry from now: 2**63-1 seconds (or 4e11) overflowed
    # Python's datetime there, so the price was taken and every checkout.session.completed
    # selling it then failed in the inbox (OverflowError), the buyer charged and granted nothing.
    century = 100 * 36_525 * 864  # 100 years of 365.25 days, in seconds
    for seconds in (century + 1, 400_000_000_000, 2**63 - 1, -1):
        err = fails(
            INVALID,
            "INVALID_ARGUMENT",
            price,
            channel,
            prod,
            credit_grants=[grant("1", expires_after_seconds=seconds)],
        )
        # Named as the contract (and the request) spells it; YAML's expires_after_sec is
        # catalog-as-code's own spelling.
        assert error_field(err) == "price.credit_grants[0].expires_after_seconds"
        assert "expires_after_seconds" in err.details()
    listed = call(
        channel, "ListPrices", catalog_pb2.ListPricesRequest(product_id=prod, include_inactive=True)
    )
    assert list(listed.prices) == []
    kept = price(channel, prod, credit_grants=[grant("1", expires_after_seconds=century)])
    assert kept.credit_grants[0].expires_after_seconds == century
    fails(
        INVALID,
        "INVALID_ARGUMENT",
        update,
        channel,
        kept.price_id,
        ["credit_grants"],
        credit_grants=[grant("2", expires_after_seconds=2**63 - 1)],
    )
    assert get(channel, kept.price_id).credit_grants[0].amount == "1"


def test_missing_credit_amount_is_field_required(channel, prod):  # type: ignore[no-untyped-def]
    fails(INVALID, "FIELD_REQUIRED", price, channel, prod, credit_grants=[grant("")])


def test_price_under_unknown_product_is_not_found(channel):  # type: ignore[no-untyped-def]
    fails(grpc.StatusCode.NOT_FOUND, "NOT_FOUND", price, channel, "prod_missing")


def test_price_without_product_is_field_required(channel):  # type: ignore[no-untyped-def]
    fails(INVALID, "FIELD_REQUIRED", price, channel, "")


def test_price_under_archived_product_is_refused(channel, prod):  # type: ignore[no-untyped-def]
    call(channel, "ArchiveProduct", catalog_pb2.ArchiveProductRequest(product_id=prod))
    fails(grpc.StatusCode.FAILED_PRECONDITION, "ARCHIVED", price, channel, prod)


def test_update_changes_mutable_fields_and_keeps_the_rest(channel, prod):  # type: ignore[no-untyped-def]
    created = price(channel, prod, unit_amount=500, nickname="Old", lookup_key="basic")
    updated = update(
        channel,
        created.price_id,
        ["nickname", "stackable", "credit_grants"],
        nickname="New",
        stackable=True,
        credit_grants=[grant("7.50")],
        lookup_key="ignored",
    )
    assert (updated.nickname, updated.stackable) == ("New", True)
    assert [g.amount for g in updated.credit_grants] == ["7.5"]
    assert updated.lookup_key == "basic" and updated.unit_amount == 500
    assert get(channel, created.price_id) == updated


def test_immutable_field_in_mask_is_price_immutable(channel, prod):  # type: ignore[no-untyped-def]
    created = price(channel, prod, unit_amount=500)
    for path in (
        "unit_amount",
        "currency",
        "type",
        "recurring",
        "recurring.interval",
        "product_id",
    ):
        fails(
            INVALID,
            "PRICE_IMMUTABLE",
            update,
            channel,
            created.price_id,
            [path, "nickname"],
            unit_amount=500,
            nickname="x",
        )
    assert get(channel, created.price_id) == created


def test_empty_mask_with_a_different_immutable_value_is_price_immutable(channel, prod):  # type: ignore[no-untyped-def]
    created = price(channel, prod, unit_amount=500)
    for fields in (
        {"unit_amount": 600},
        {"currency": "eur"},
        {"type": catalog_pb2.PRICE_TYPE_RECURRING, "recurring": MONTHLY},
        {"product_id": "prod_other"},
    ):
        fails(INVALID, "PRICE_IMMUTABLE", update, channel, created.price_id, nickname="x", **fields)
    assert get(channel, created.price_id) == created


def test_empty_mask_with_the_same_immutable_values_updates(channel, prod):  # type: ignore[no-untyped-def]
    created = price(channel, prod, unit_amount=500, currency="usd")
    updated = update(
        channel,
        created.price_id,
        product_id=prod,
        currency="USD",
        unit_amount=500,
        type=catalog_pb2.PRICE_TYPE_ONE_TIME,
        nickname="Renamed",
    )
    assert updated.nickname == "Renamed" and updated.unit_amount == 500


def test_lookup_key_is_unique_among_active_prices(channel, prod):  # type: ignore[no-untyped-def]
    first = price(channel, prod, lookup_key="pro")
    fails(
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
        price,
        channel,
        prod,
        lookup_key="pro",
        unit_amount=2000,
    )
    other = price(channel, prod, lookup_key="team")
    fails(
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
        update,
        channel,
        other.price_id,
        ["lookup_key"],
        lookup_key="pro",
    )
    archive(channel, first.price_id)
    second = price(channel, prod, lookup_key="pro", unit_amount=2000)  # freed by the archive
    assert second.lookup_key == "pro" and second.price_id != first.price_id
    assert get(channel, first.price_id).lookup_key == "pro"  # history keeps its key


def test_a_taken_lookup_key_is_not_echoed_whole(channel, prod):  # type: ignore[no-untyped-def]
    """README "Input rules": errors never echo more than 64 characters of an input."""
    long_key = "k" * 200
    price(channel, prod, lookup_key=long_key)
    err = fails(
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
        price,
        channel,
        prod,
        lookup_key=long_key,
        unit_amount=2000,
    )
    assert "k" * 65 not in (err.details() or "")


def test_archive_price_is_idempotent_and_keeps_it_readable(channel, prod):  # type: ignore[no-untyped-def]
    created = price(channel, prod)
    archived = archive(channel, created.price_id)
    assert not archived.active
    assert archive(channel, created.price_id) == archived
    assert get(channel, created.price_id) == archived


def test_get_unknown_price_is_not_found(channel):  # type: ignore[no-untyped-def]
    fails(grpc.StatusCode.NOT_FOUND, "NOT_FOUND", get, channel, "price_missing")
