"""The console shows a price's or purchase's amount in major units as Stripe counts the
currency's minor units (tollbooth.currencies), not always as hundredths: 1000 JPY is
"1,000 JPY" (not "10.00"), 1500 KWD is "1.500 KWD", 1000 MGA "1,000 MGA", 150000 ISK
"1,500.00 ISK"; a negative amount keeps its sign."""

from __future__ import annotations

import pytest

from tollbooth.console.pages import TEMPLATES


@pytest.mark.parametrize(
    ("cents", "currency", "shown"),
    [
        (2900, "usd", "29.00 USD"),
        (1000, "jpy", "1,000 JPY"),
        (1500, "kwd", "1.500 KWD"),
        (1000, "mga", "1,000 MGA"),
        (150_000, "isk", "1,500.00 ISK"),
        (-2900, "eur", "-29.00 EUR"),
        (None, "usd", "0.00 USD"),
        (2**53 + 1, "usd", "90,071,992,547,409.93 USD"),
    ],
)
def test_money_is_shown_in_the_currencys_major_units(
    cents: int | None, currency: str, shown: str
) -> None:
    assert TEMPLATES.filters["money"](cents, currency) == shown
