"""The provider's minor units per currency (stripe.com/docs/currencies): where they differ from
ISO 4217 (MGA is zero-decimal, ISK two-decimal in whole kronur), and the ISO currencies with no
provider minor unit (IQD, LYD: three decimals outside Stripe's five; CLF, UYW: four), as the
catalog, the notifications and the sandbox's pages read them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tollbooth import currencies, errors
from tollbooth.catalog import fields as f
from tollbooth.notifications import envelope
from tollbooth.sandbox.objects import fmt_amount


@pytest.mark.parametrize(
    ("minor", "code", "major"),
    [
        (1000, "mga", "1000"),
        (100, "isk", "1.00"),
        (500, "JPY", "500"),
        (1005, "kwd", "1.005"),
        (5, "usd", "0.05"),
        (99_999_999, "eur", "999999.99"),
    ],
)
def test_a_notification_amount_is_major_units_as_the_provider_counts_them(minor, code, major):  # type: ignore[no-untyped-def]
    assert envelope.major_units(minor, code) == major
    assert currencies.major(minor, code) == Decimal(major)


@pytest.mark.parametrize(
    ("minor", "code", "shown"),
    [
        (123_456_789_012_345_678_9, "usd", "12,345,678,901,234,567.89 USD"),
        (1000, "mga", "1,000 MGA"),
        (150_000, "isk", "1,500.00 ISK"),
        (1010, "kwd", "1.010 KWD"),
        (7, "xpf", "7 XPF"),
    ],
)
def test_the_sandbox_pages_show_an_amount_exactly_in_the_currency_s_units(minor, code, shown):  # type: ignore[no-untyped-def]
    assert fmt_amount(minor, code) == shown


@pytest.mark.parametrize("code", ["iqd", "LYD", "clf", "uyw"])
def test_an_iso_currency_without_provider_minor_units_is_currency_invalid(code):  # type: ignore[no-untyped-def]
    with pytest.raises(errors.DomainError) as err:
        f.clean_currency(code)
    assert err.value.reason == "CURRENCY_INVALID"


def test_isk_is_taken_only_in_whole_kronur():
    assert "divisible by 100" in f.provider_amount_refusal(150, "isk")
    assert f.provider_amount_refusal(1500, "isk") == ""
    assert f.provider_amount_refusal(150, "usd") == ""


@pytest.mark.parametrize("code", ["bov", "CHE", "chw", "cou", "mxv", "usn", "uyi"])
def test_an_iso_fund_code_is_currency_invalid(code):  # type: ignore[no-untyped-def]
    """ISO 4217's fund codes (Bolivian Mvdol, WIR euro and franc, UVR, UDI, US dollar next
    day, Uruguayan UI) are units of account, not currencies anyone is charged in: clean_currency
    promises no fund codes, and Stripe holds none (UYI's ISO exponent 0 was counted as 2)."""
    with pytest.raises(errors.DomainError) as err:
        f.clean_currency(code)
    assert err.value.reason == "CURRENCY_INVALID"
