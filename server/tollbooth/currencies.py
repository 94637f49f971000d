"""How the provider (Stripe) writes an amount of each currency: which currencies it can hold,
how many minor units make one major unit, and which amounts it refuses.

Stripe's minor units follow ISO 4217 except where stripe.com/docs/currencies says otherwise:
- zero-decimal currencies (an amount of 500 is 500 units); MGA is one though ISO gives it two
  decimals;
- ISK is two-decimal in the API (100 is one krona) though ISO gives it none, and since April
  2023 Stripe takes only whole kronur (amounts divisible by 100);
- three-decimal currencies (BHD, JOD, KWD, OMR, TND) take only amounts whose last digit is 0.
ISO currencies with three or four decimals outside that list (IQD, LYD, CLF, UYW) have no
Stripe minor unit at all, so they are no currency a price or payment can be in.
"""

from __future__ import annotations

from decimal import Decimal

import iso4217

ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv"}
    | {"xaf", "xof", "xpf"}
)
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
# ISO 4217's fund codes with minor units (Mvdol, WIR euro and franc, UVR, UDI, US dollar next
# day, Uruguayan UI): units of account, which no one is charged in and Stripe does not hold.
FUNDS = frozenset({"bov", "che", "chw", "cou", "mxv", "usn", "uyi"})
# Two-decimal in the API, but only whole major units are taken (amount % 100 == 0).
WHOLE_UNITS_ONLY = frozenset({"isk"})
# Stripe's minimum charge per currency, in minor units (its "minimum and maximum charge
# amounts"): under it the provider refuses a payment (`amount_too_small`), so payment intents
# and payment-mode checkouts refuse it first. A currency not listed has no minimum beyond one
# minor unit.
MIN_CHARGE = {
    "usd": 50, "aed": 200, "aud": 50, "bgn": 100, "brl": 50, "cad": 50, "chf": 50,
    "czk": 1500, "dkk": 250, "eur": 50, "gbp": 30, "hkd": 400, "huf": 17500, "inr": 50,
    "jpy": 50, "mxn": 1000, "myr": 200, "nok": 300, "nzd": 50, "pln": 200, "ron": 200,
    "sek": 300, "sgd": 50, "thb": 1000,
}  # fmt: skip


def known(code: str) -> bool:
    """`code` (lower case) is an active ISO 4217 currency, not a fund code, that the provider
    has minor units for."""
    entry = iso4217.Currency.__members__.get(code)
    if entry is None or entry.exponent is None or code in FUNDS:
        return False
    return entry.exponent <= 2 or code in THREE_DECIMAL


def exponent(code: str) -> int:
    """How many decimal places the provider's minor units of `code` are (any case)."""
    code = code.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def major(minor: int, code: str) -> Decimal:
    """`minor` units of `code` as an exact decimal of major units, at the currency's scale."""
    return Decimal(minor).scaleb(-exponent(code))


def refusal(amount: int, code: str) -> str:
    """Why the provider refuses `amount` minor units of `code` though it is within its limits,
    as a sentence; empty when it takes it. A currency it holds no minor unit for (IQD, say,
    on a price stored before CreatePrice refused it) is refused whatever the amount."""
    code = code.lower()
    if not known(code):
        return f"{code} is no currency the provider takes amounts in"
    if code in THREE_DECIMAL and amount % 10:
        return (
            f"{code} is a three-decimal currency: the provider takes its amounts only in"
            f" whole tens of minor units (last digit 0), not {amount}"
        )
    if code in WHOLE_UNITS_ONLY and amount % 100:
        return (
            f"{code} amounts are in hundredths but the provider takes only whole units"
            f" (divisible by 100), not {amount}"
        )
    return ""
