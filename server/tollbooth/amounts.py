"""Amounts: the decimal contexts, parsing, formatting and limits every domain uses.

Plumbing: imports no domain. A credit amount is stored as NUMERIC(38, 18), so an amount a
caller writes has at most 20 integer and 18 fractional digits, in plain notation; arithmetic
on stored amounts is exact (`EXACT` traps any rounding), and overage, which nothing bounds,
is kept exactly at any size (`WIDE`).
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

from tollbooth import errors

# Credit amounts fit NUMERIC(38, 18): 20 integer digits, 18 fractional digits.
MAX_AMOUNT_INT_DIGITS = 20
MAX_AMOUNT_FRAC_DIGITS = 18
# NUMERIC(38, 18): a balance (free plus held) stays below 10^20.
MAX_TOTAL = Decimal(10) ** MAX_AMOUNT_INT_DIGITS - Decimal(10) ** -MAX_AMOUNT_FRAC_DIGITS
# The ledger's precision: one unit of the last stored fractional digit.
QUANTUM = Decimal(1).scaleb(-MAX_AMOUNT_FRAC_DIGITS)

# Patterns are used with fullmatch: "$" would also accept a trailing newline.
# Plain ASCII decimal notation only: no sign, exponent, spaces, NaN, Infinity or other digits.
PLAIN_DECIMAL_RE = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
PLAIN_ZERO = re.compile(r"0+(?:\.0+)?")
# A credit type: the unit an amount of credits counts.
CREDIT_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}")

ZERO = Decimal(0)

# 80 digits cover any sum of NUMERIC(38, 18) amounts we can store; rounding is an error.
EXACT = decimal.Context(
    prec=80,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Rounded, decimal.Overflow],
)
# Overage is not bounded by what was granted: exact at any size it can reach (a usage burn is
# at most ~10^350), rounding is an error.
WIDE = decimal.Context(
    prec=1000,
    Emax=999_999,
    Emin=-999_999,
    traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Rounded, decimal.Overflow],
)
# Products of a rate (38 digits) and a number (60 digits, or a double's 17 digits at any
# exponent) are exact here; quantizing a product under 10^330 to 18 places needs < 350 digits.
# Unlike WIDE, rounding (half to even) is allowed: a usage burn rounds at the 18th place.
WIDE_ROUNDING = decimal.Context(
    prec=1000,
    Emax=999_999,
    Emin=-999_999,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.InvalidOperation, decimal.Overflow],
)


def add(*values: Decimal) -> Decimal:
    total = ZERO
    for v in values:
        total = EXACT.add(total, v)
    return total


def sub(a: Decimal, b: Decimal) -> Decimal:
    return EXACT.subtract(a, b)


def wide_sum(values: Iterable[Decimal]) -> Decimal:
    total = ZERO
    for v in values:
        total = WIDE.add(total, v)
    return total


def fmt(value: Decimal) -> str:
    """The canonical decimal string: no exponent, no trailing zeros ("10", "0.25", "-3")."""
    if value == 0:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def clean_credit_amount(raw: str, field_name: str = "amount") -> str:
    """A positive decimal string, normalised ("010.50" -> "10.5").

    Only plain notation is accepted, and its length is bounded before Decimal sees it, so
    "NaN", "Infinity", "1e999999999" and the like never reach arithmetic.
    """
    match = PLAIN_DECIMAL_RE.fullmatch(raw)
    if match is None:
        raise errors.invalid(
            f"{field_name} must be a positive decimal string such as '100' or '2.5'",
            reason="AMOUNT_INVALID",
            field=field_name,
        )
    int_digits = match.group(1).lstrip("0")
    frac_digits = (match.group(2) or "").rstrip("0")
    if len(int_digits) > MAX_AMOUNT_INT_DIGITS or len(frac_digits) > MAX_AMOUNT_FRAC_DIGITS:
        raise errors.invalid(
            f"{field_name} allows at most {MAX_AMOUNT_INT_DIGITS} integer and "
            f"{MAX_AMOUNT_FRAC_DIGITS} fractional digits",
            reason="AMOUNT_INVALID",
            field=field_name,
        )
    try:
        amount = Decimal(f"{int_digits or '0'}.{frac_digits or '0'}")
    except InvalidOperation as exc:  # unreachable after the pattern, kept as a guard
        raise errors.invalid(
            f"{field_name} is not a decimal", reason="AMOUNT_INVALID", field=field_name
        ) from exc
    if not amount.is_finite() or amount <= 0:
        raise errors.invalid(
            f"{field_name} must be greater than zero", reason="AMOUNT_INVALID", field=field_name
        )
    return f"{int_digits or '0'}.{frac_digits}" if frac_digits else (int_digits or "0")


def parse_amount(raw: str, field_name: str = "amount", *, allow_zero: bool = False) -> Decimal:
    """A decimal string with at most 20 integer and 18 fractional digits; finer is refused."""
    if not raw:
        raise errors.required(field_name)
    if allow_zero and PLAIN_ZERO.fullmatch(raw):
        return ZERO
    return Decimal(clean_credit_amount(raw, field_name))
