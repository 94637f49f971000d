"""Amounts: the decimal contexts, parsing, formatting and limits every domain uses.

Plumbing: imports no domain. A credit amount is stored as NUMERIC(38, 18), so an amount a
caller writes has at most 20 integer and 18 fractional digits, in plain notation. Every
calculation on amounts runs in `CONTEXT` (through `add`, `sub`, `neg`, `mul`, `total`), which
traps any rounding or overflow; limits are checked before arithmetic (`check_storable`), so a
value that does not fit is AMOUNT_INVALID, never a database error.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from tollbooth import errors

# Credit amounts fit NUMERIC(38, 18): 20 integer digits, 18 fractional digits.
MAX_AMOUNT_INT_DIGITS = 20
MAX_AMOUNT_FRAC_DIGITS = 18
# NUMERIC(38, 18): a balance (free plus held) stays below 10^20.
# Written out: `10**20 - 10**-18` in Python's default context rounds to 1E+20 (28 digits).
MAX_TOTAL = Decimal("9" * MAX_AMOUNT_INT_DIGITS + "." + "9" * MAX_AMOUNT_FRAC_DIGITS)
# The ledger's precision: one unit of the last stored fractional digit.
QUANTUM = Decimal(1).scaleb(-MAX_AMOUNT_FRAC_DIGITS)

# Patterns are used with fullmatch: "$" would also accept a trailing newline.
# Plain ASCII decimal notation only: no sign, exponent, spaces, NaN, Infinity or other digits.
PLAIN_DECIMAL_RE = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
PLAIN_ZERO = re.compile(r"0+(?:\.0+)?")
# A credit type: the unit an amount of credits counts.
CREDIT_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}")

ZERO = Decimal(0)

# The one decimal context of every calculation on amounts (ledger, balances, holds, burns,
# grants x quantity, usage aggregates). Python's default context keeps 28 significant digits
# and rounds silently; a stored amount has up to 38. This one keeps 1000 and traps anything
# that would round or overflow, so a result is exact or an error, never a drifted value:
# sums of stored amounts need 40 digits, overage (usage burned beyond the balance, under
# 10^330 a burn) and an exact sum of doubles (1e-308 to 1e308: about 630 digits) fit too.
CONTEXT = decimal.Context(
    prec=1000,
    Emax=999_999,
    Emin=-999_999,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[
        decimal.InvalidOperation,
        decimal.DivisionByZero,
        decimal.Inexact,
        decimal.Rounded,
        decimal.Overflow,
        decimal.Underflow,
    ],
)
# The single place a calculation may round on purpose: `to_quantum` (a usage burn of
# rate x units rounds half to even at the ledger's 18th fractional digit). Same width.
_ROUNDING = CONTEXT.copy()
_ROUNDING.traps[decimal.Inexact] = False
_ROUNDING.traps[decimal.Rounded] = False


def add(*values: Decimal) -> Decimal:
    total = ZERO
    for v in values:
        total = CONTEXT.add(total, v)
    return total


def sub(a: Decimal, b: Decimal) -> Decimal:
    return CONTEXT.subtract(a, b)


def neg(a: Decimal) -> Decimal:
    """-a, exactly (unary minus rounds to the thread's context, 28 digits by default)."""
    return CONTEXT.minus(a)


def mul(a: Decimal, b: Decimal | int) -> Decimal:
    return CONTEXT.multiply(a, b)


def total(values: Iterable[Decimal | int]) -> Decimal:
    """An exact sum (the builtin `sum` adds in the thread's 28-digit context)."""
    out = ZERO
    for v in values:
        out = CONTEXT.add(out, v)
    return out


def to_quantum(value: Decimal) -> Decimal:
    """`value` rounded half to even at the 18th fractional digit, canonical (no trailing
    zeros): the one deliberate rounding (a usage burn's rate x units)."""
    rounded = value.quantize(QUANTUM, context=_ROUNDING)
    return rounded.normalize(CONTEXT) if rounded else ZERO


def _not_storable(what: str, field_name: str) -> errors.DomainError:
    return errors.invalid(
        f"{what} would exceed the largest storable amount "
        f"({MAX_AMOUNT_INT_DIGITS} integer and {MAX_AMOUNT_FRAC_DIGITS} fractional digits)",
        reason="AMOUNT_INVALID",
        field=field_name,
    )


def check_storable(value: Decimal, what: str, field_name: str = "amount") -> Decimal:
    """`value` if it fits NUMERIC(38, 18) (at most MAX_TOTAL, 18 fractional digits), else
    AMOUNT_INVALID (HTTP 400): callers check before they write, never the database after."""
    if value.copy_abs() > MAX_TOTAL or value.quantize(QUANTUM, context=_ROUNDING) != value:
        raise _not_storable(what, field_name)
    return value


def times(amount: str, quantity: int, field_name: str = "amount") -> Decimal:
    """A per-unit amount (a decimal string, such as a price's credit grant) times a quantity,
    exactly; AMOUNT_INVALID when the product is not storable, never rounded."""
    if quantity < 1:
        raise errors.invalid("quantity must be at least 1", field="quantity")
    unit = Decimal(clean_credit_amount(amount, field_name))
    # Bounded before multiplying: a quantity with more digits than the cap cannot fit.
    if quantity > 10 ** (MAX_AMOUNT_INT_DIGITS + MAX_AMOUNT_FRAC_DIGITS):
        raise _not_storable(f"{field_name} x quantity", field_name)
    return check_storable(mul(unit, quantity), f"{field_name} x quantity", field_name)


def add_grants(
    granted: dict[str, Decimal], specs: Iterable[Mapping[str, Any]], quantity: int, where: str
) -> None:
    """What a price's credit grant specs (`credit_type`, `amount`) give times `quantity`,
    added to `granted` by credit type: AMOUNT_INVALID (field `{where}.quantity`) when one
    grant, or the total of one credit type, would pass the largest storable amount. A checkout
    or payment intent checks this before anything is created: the webhook that fulfils it
    once paid could never write it."""
    for spec in specs:
        kind = str(spec.get("credit_type") or "")
        try:
            each = times(str(spec["amount"]), quantity, f"{where}.quantity")
            granted[kind] = check_storable(add(granted.get(kind, ZERO), each), "")
        except errors.DomainError:
            raise errors.invalid(
                f"{where}: the {errors.shown(kind)} credits its price grants times the quantity"
                " (summed over the purchase) would exceed the largest storable amount",
                reason="AMOUNT_INVALID",
                field=f"{where}.quantity",
            ) from None


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
