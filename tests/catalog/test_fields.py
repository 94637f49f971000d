"""Pure validation of catalog fields: no database, no server."""

from __future__ import annotations

import pytest

from tollbooth.catalog import fields as f
from tollbooth.catalog.fields import CreditGrant, Entitlement, PriceFields, ProductFields
from tollbooth.errors import DomainError, Kind

VALID_PRICE = PriceFields(product_id="prod_1", currency="usd", unit_amount=100, type=f.ONE_TIME)


def reason_of(fn, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(DomainError) as exc:
        fn(*args, **kwargs)
    assert exc.value.kind is Kind.INVALID_ARGUMENT
    return exc.value.reason


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("1", "1"),
        ("010", "10"),
        ("2.50", "2.5"),
        ("0.5", "0.5"),
        ("100.000", "100"),
        ("0.000000000000000001", "0.000000000000000001"),
        ("9" * 20, "9" * 20),
    ],
)
def test_credit_amount_is_normalised(raw, normalised):  # type: ignore[no-untyped-def]
    assert f.clean_credit_amount(raw) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "0",
        "0.0",
        "-1",
        "+1",
        "NaN",
        "nan",
        "sNaN",
        "Infinity",
        "inf",
        "1e3",
        "1E+999999999",
        "1_000",
        "1,5",
        "5.",
        ".5",
        "1 000",
        "0x10",
        "١٢",
        "5\n",
        "9" * 21,
        "0." + "0" * 18 + "1",
        "",
    ],
)
def test_bad_credit_amount_is_amount_invalid(raw):  # type: ignore[no-untyped-def]
    assert reason_of(f.clean_credit_amount, raw) == "AMOUNT_INVALID"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"product_id": ""}, "FIELD_REQUIRED"),
        ({"currency": ""}, "FIELD_REQUIRED"),
        ({"currency": "us"}, "CURRENCY_INVALID"),
        ({"currency": "xyz"}, "CURRENCY_INVALID"),
        ({"currency": "xau"}, "CURRENCY_INVALID"),
        ({"currency": "usdd"}, "CURRENCY_INVALID"),
        ({"unit_amount": -1}, "INVALID_ARGUMENT"),
        # Stripe's three-decimal currencies take amounts whose last digit is 0 only.
        ({"currency": "kwd", "unit_amount": 1005}, "PRICE_AMOUNT_INVALID"),
        ({"currency": " BHD ", "unit_amount": 1}, "PRICE_AMOUNT_INVALID"),
        ({"currency": "jod", "unit_amount": 99_999_999}, "PRICE_AMOUNT_INVALID"),
        ({"currency": "omr", "unit_amount": 2995}, "PRICE_AMOUNT_INVALID"),
        ({"currency": "Tnd", "unit_amount": 11}, "PRICE_AMOUNT_INVALID"),
        ({"type": "unknown(7)"}, "INVALID_ARGUMENT"),
        ({"interval": "month"}, "INVALID_ARGUMENT"),
        ({"type": f.RECURRING}, "FIELD_REQUIRED"),
        ({"type": f.RECURRING, "interval": "month", "interval_count": -1}, "INVALID_ARGUMENT"),
        ({"type": f.RECURRING, "interval": "year", "interval_count": 4}, "INVALID_ARGUMENT"),
        ({"position": -1}, "INVALID_ARGUMENT"),
        ({"lookup_key": "k" * 201}, "FIELD_INVALID"),
        ({"metadata": {"k" * 41: "v"}}, "FIELD_INVALID"),
        ({"metadata": {str(i): "v" for i in range(51)}}, "INVALID_ARGUMENT"),
        ({"entitlements": (Entitlement(""),)}, "FIELD_REQUIRED"),
        ({"entitlements": (Entitlement("sso"), Entitlement("sso", "x"))}, "INVALID_ARGUMENT"),
        ({"credit_grants": (CreditGrant("", "1", on_purchase=True),)}, "FIELD_REQUIRED"),
        ({"credit_grants": (CreditGrant("a b", "1", on_purchase=True),)}, "INVALID_ARGUMENT"),
        ({"credit_grants": (CreditGrant("api", "", on_purchase=True),)}, "FIELD_REQUIRED"),
        ({"credit_grants": (CreditGrant("api", "-1", on_purchase=True),)}, "AMOUNT_INVALID"),
        ({"credit_grants": (CreditGrant("api", "1"),)}, "INVALID_ARGUMENT"),
        ({"credit_grants": (CreditGrant("api", "1", on_renewal=True),)}, "INVALID_ARGUMENT"),
        (
            {"credit_grants": (CreditGrant("api", "1", True, expires_after_sec=-1),)},
            "INVALID_ARGUMENT",
        ),
    ],
)
def test_invalid_price_fields_are_refused(change, reason):  # type: ignore[no-untyped-def]
    assert reason_of(f.clean_price, PriceFields(**{**vars(VALID_PRICE), **change})) == reason


@pytest.mark.parametrize(
    ("currency", "amount"),
    [("kwd", 1000), ("BHD", 0), ("jod", 99_999_990), ("omr", 10), ("tnd", 2990), ("usd", 1005)],
)
def test_three_decimal_amounts_ending_in_zero_and_other_currencies_are_taken(currency, amount):  # type: ignore[no-untyped-def]
    clean = f.clean_price(
        PriceFields(**{**vars(VALID_PRICE), "currency": currency, "unit_amount": amount})
    )
    assert (clean.currency, clean.unit_amount) == (currency.lower(), amount)


def test_an_update_leaves_a_stored_three_decimal_amount_alone():
    """Amount and currency never change in an update: a price stored with 1005 kwd before the
    rule can still be renamed (its checkout and payments are refused instead)."""
    stored = PriceFields(**{**vars(VALID_PRICE), "currency": "kwd", "unit_amount": 1005})
    assert f.clean_price(stored, new_amount=False).unit_amount == 1005
    assert reason_of(f.clean_price, stored) == "PRICE_AMOUNT_INVALID"


def test_an_update_leaves_a_stored_currency_the_provider_lacks_alone():
    """A price stored in IQD before CreatePrice refused it (no Stripe minor unit) can still be
    renamed or unlinked, as one with a refused amount can: its currency never changes in an
    update, and its checkout and payments are refused instead."""
    stored = PriceFields(**{**vars(VALID_PRICE), "currency": "iqd", "unit_amount": 1500})
    assert f.clean_price(stored, new_amount=False).currency == "iqd"
    assert reason_of(f.clean_price, stored) == "CURRENCY_INVALID"


def test_price_is_normalised():
    clean = f.clean_price(
        PriceFields(
            product_id="prod_1",
            currency=" EUR ",
            unit_amount=5,
            type=f.RECURRING,
            interval="week",
            lookup_key=" pro ",
            credit_grants=(CreditGrant("api", "1.50", True, True),),
        )
    )
    assert clean.currency == "eur"
    assert clean.interval_count == 1
    assert clean.lookup_key == "pro"
    assert clean.credit_grants[0].amount == "1.5"


def test_product_name_is_required():
    assert reason_of(f.clean_product, ProductFields(name=" ")) == "FIELD_REQUIRED"


def test_mask_paths_sort_mutable_immutable_output_only_and_unknown():
    apply, immutable = f.mask_paths(
        ["nickname", "active", "currency"], f.PRICE_MUTABLE, f.PRICE_OUTPUT_ONLY, f.PRICE_IMMUTABLE
    )
    assert apply == ("nickname",) and immutable == ("currency",)
    assert f.mask_paths([], f.PRICE_MUTABLE, f.PRICE_OUTPUT_ONLY)[0] == ()  # AIP-134: none
    assert f.mask_paths(["*"], f.PRICE_MUTABLE, f.PRICE_OUTPUT_ONLY)[0] == f.PRICE_MUTABLE
    assert reason_of(f.mask_paths, ["colour"], f.PRICE_MUTABLE, ()) == "FIELD_INVALID"


def test_unspecified_price_type_follows_the_recurrence():
    assert f.clean_price_shape("", "", 0) == (f.ONE_TIME, "", 0)
    assert f.clean_price_shape("", "month", 0) == (f.RECURRING, "month", 1)
