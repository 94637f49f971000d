"""The rules of a payment intent request, and reading one back.

A payment intent is an amount in minor units in one currency; with a one-time catalog price
named, it buys that price (amount and currency are the price's: a buyer's page cannot pay
less for it) and its credit grants are granted when the provider reports the payment
succeeded (`tollbooth.payments.effects`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy.orm import Session

from tollbooth import amounts, currencies, errors
from tollbooth.accounts.manage import clean_email
from tollbooth.accounts.service import owner
from tollbooth.auth.caller import Caller
from tollbooth.catalog.fields import clean_currency, provider_amount_refusal
from tollbooth.db.models import Price, Product
from tollbooth.db.payment_intents import PaymentIntent
from tollbooth.payments import repository

# Stripe's limit: at most eight digits of minor units (99,999,999: $999,999.99).
MAX_AMOUNT = 99_999_999
MAX_DESCRIPTION = 1000


@dataclass(frozen=True)
class PaymentRequest:
    account_ref: str
    amount: int
    currency: str
    description: str
    receipt_email: str
    catalog_price_id: str
    request_scope: str
    request_id: str


@dataclass(frozen=True)
class Cleaned:
    amount: int
    currency: str
    description: str
    receipt_email: str
    price: Price | None

    def fingerprint(self) -> str:
        parts = [
            str(self.amount),
            self.currency,
            self.description,
            self.receipt_email,
            self.price.id if self.price else "",
        ]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _one_time_price(session: Session, ident: str) -> Price:
    price = session.get(Price, ident)
    if price is None:
        raise errors.invalid(
            f"price {errors.shown(ident)} does not exist",
            reason="PRICE_NOT_FOUND",
            field="catalog_price_id",
        )
    product = session.get(Product, price.product_id)
    if not price.active or product is None or not product.active:
        raise errors.failed_precondition(
            "ARCHIVED", f"price {price.id!r} is archived", price_id=price.id
        )
    if price.type == "recurring":
        raise errors.invalid(
            f"price {price.id!r} is recurring: a payment intent buys one-time prices only"
            " (a subscription is sold through checkout)",
            reason="PRICE_NOT_ONE_TIME",
            field="catalog_price_id",
        )
    return price


def _currency(currency: str) -> str:
    """An ISO 4217 code in any case, lower-cased as prices store it (`clean_currency`, the
    catalog's rule): `USD` is `usd`, so an intent takes what a price takes."""
    return clean_currency(currency)


def _mismatch(field: str, given: object, price: Price, wanted: object) -> errors.DomainError:
    return errors.invalid(
        f"{field} {given!r} differs from price {price.id!r}'s {wanted!r}; leave it out to pay"
        " the price's",
        reason="PAYMENT_AMOUNT_MISMATCH",
        field=field,
    )


def clean(session: Session, req: PaymentRequest) -> Cleaned:
    """The request checked: INVALID_ARGUMENT with a stable reason, nothing written."""
    price = None
    ident = req.catalog_price_id.strip()
    amount, currency = req.amount, req.currency.strip()
    # The field a refusal of the amount or the currency names: the caller's, or the price's
    # when the price gave it (the caller sent no such field).
    amount_field, currency_field = "amount", "currency"
    if currency:  # a malformed currency is that, before it is compared with a price's
        currency = _currency(currency)
    if ident:
        price = _one_time_price(session, ident)
        # What its payment would grant must be storable, or the payment could never be fulfilled.
        amounts.add_grants({}, price.credit_grants or [], 1, "catalog_price_id")
        if amount == 0:
            amount, amount_field = price.unit_amount, "catalog_price_id"
        elif amount != price.unit_amount:
            raise _mismatch("amount", amount, price, price.unit_amount)
        if not currency:
            currency, currency_field = price.currency, "catalog_price_id"
        elif currency != price.currency:
            raise _mismatch("currency", currency, price, price.currency)
    if not 1 <= amount <= MAX_AMOUNT:
        raise errors.invalid(
            f"amount must be a whole number of minor units from 1 to {MAX_AMOUNT}",
            reason="PAYMENT_AMOUNT_INVALID",
            field=amount_field,
        )
    if not currency:
        raise errors.required("currency")
    if (
        price is not None
        and currency_field == "catalog_price_id"
        and not currencies.known(currency)
    ):
        # Stored before CreatePrice refused it (IQD): the caller named the price, not this.
        raise errors.invalid(
            f"price {price.id!r} is in {currency!r}, no currency the provider takes payments in",
            reason="CURRENCY_INVALID",
            field=currency_field,
        )
    currency = _currency(currency)
    least = currencies.MIN_CHARGE.get(currency, 1)
    if amount < least:
        raise errors.invalid(
            f"amount is under the provider's minimum charge of {least} minor units of {currency}",
            reason="PAYMENT_AMOUNT_INVALID",
            field=amount_field,
        )
    # Also when a price gives the amount: one stored before CreatePrice refused it.
    if refusal := provider_amount_refusal(amount, currency):
        raise errors.invalid(
            f"amount: {refusal}", reason="PAYMENT_AMOUNT_INVALID", field=amount_field
        )
    description = req.description.strip()
    if len(description) > MAX_DESCRIPTION:
        raise errors.invalid(
            f"description is longer than {MAX_DESCRIPTION} characters", field="description"
        )
    email = clean_email(req.receipt_email, "receipt_email") or ""  # EMAIL_INVALID
    return Cleaned(amount, currency, description, email, price)


def get_payment_intent(session: Session, caller: Caller, ident: str) -> PaymentIntent:
    """Another account's intent answers exactly like one that does not exist."""
    ident = ident.strip()
    if not ident:
        raise errors.required("payment_intent_id")
    row = repository.intent_by_either_id(session, ident, owner=owner(caller))
    if row is None:
        raise errors.not_found("payment intent", ident)
    return row
