"""Catalog field values: the domain shapes of products and prices and their pure validation.

The RPC converters and the catalog file both build these shapes, and both go through the
same `clean_*` functions, so a value accepted by one is stored exactly as the other would
store it (which is what lets a re-applied catalog file compare equal to the database).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tollbooth import currencies, errors
from tollbooth.amounts import CREDIT_TYPE_RE, clean_credit_amount
from tollbooth.metadata import PROVIDER_PRODUCT_KEY, clean_provider_metadata

ONE_TIME = "one_time"
RECURRING = "recurring"
PRICE_TYPES = (ONE_TIME, RECURRING)
INTERVALS = ("day", "week", "month", "year")
# Stripe's limit: at most three years between renewals.
MAX_INTERVAL_COUNT = {"day": 1095, "week": 156, "month": 36, "year": 3}

INT32_MAX = 2**31 - 1
# The provider's largest `unit_amount` (eight digits of minor units; Stripe's limit).
MAX_UNIT_AMOUNT = 99_999_999
MAX_ENTITLEMENTS = 100
MAX_CREDIT_GRANTS = 20
# A purchased grant expires this long after the purchase (or the period's start): a century of
# 365.25-day years. Past it the date overflowed Python's datetime (year 9999) when a purchase
# applied, and the inbox failed that purchase's event on every retry.
MAX_GRANT_EXPIRY_SEC = 36_525 * 86_400

# Patterns are used with fullmatch: "$" would also accept a trailing newline.
CURRENCY_RE = re.compile(r"[A-Za-z]{3}")
# A product's stable key (catalog as code identifies products by it).
PRODUCT_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,39}")


@dataclass(frozen=True)
class Entitlement:
    """A feature a price or product grants. Its kind follows from the fields set: `metric`
    and `limit` make it metered (a limit per billing period), `credit_type` and `amount`
    credit-backed (the credits one action needs), neither a boolean."""

    feature: str
    value: str = ""
    metric: str = ""
    limit: str = ""
    credit_type: str = ""
    amount: str = ""

    def as_json(self) -> dict[str, str]:
        out = {"feature": self.feature, "value": self.value}
        for key in ("metric", "limit", "credit_type", "amount"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> Entitlement:
        return cls(**{k: str(stored.get(k, "")) for k in ENTITLEMENT_FIELDS})


ENTITLEMENT_FIELDS = ("feature", "value", "metric", "limit", "credit_type", "amount")
# A billable metric's code (the usage room's rule, repeated: the catalog imports no usage).
METRIC_CODE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")


@dataclass(frozen=True)
class CreditGrant:
    credit_type: str
    amount: str
    on_purchase: bool = False
    on_renewal: bool = False
    expires_after_sec: int = 0
    priority: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "credit_type": self.credit_type,
            "amount": self.amount,
            "on_purchase": self.on_purchase,
            "on_renewal": self.on_renewal,
            "expires_after_sec": self.expires_after_sec,
            "priority": self.priority,
        }


@dataclass(frozen=True)
class ProductFields:
    """The writable fields of a product. stripe_product_id None means "not given"."""

    name: str = ""
    key: str = ""
    description: str = ""
    position: int = 0
    stripe_product_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    entitlements: tuple[Entitlement, ...] = ()


@dataclass(frozen=True)
class PriceFields:
    """The writable fields of a price. Empty strings and zeros mean "not given"."""

    product_id: str = ""
    currency: str = ""
    unit_amount: int = 0
    type: str = ""
    interval: str = ""
    interval_count: int = 0
    lookup_key: str = ""
    stripe_price_id: str | None = None
    stackable: bool = False
    subscription_group: str = ""
    credit_grants: tuple[CreditGrant, ...] = ()
    entitlements: tuple[Entitlement, ...] = ()
    position: int = 0
    nickname: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


# Update masks. Output-only paths are accepted and ignored (AIP-203); unknown paths are refused.
PRODUCT_MUTABLE = (
    "name",
    "key",
    "description",
    "position",
    "stripe_product_id",
    "metadata",
    "entitlements",
)
PRODUCT_OUTPUT_ONLY = ("product_id", "active", "create_time", "update_time")
PRICE_MUTABLE = (
    "lookup_key",
    "stripe_price_id",
    "stackable",
    "subscription_group",
    "credit_grants",
    "entitlements",
    "position",
    "nickname",
    "metadata",
)
PRICE_IMMUTABLE = (
    "product_id",
    "currency",
    "unit_amount",
    "type",
    "recurring",
    "recurring.interval",
    "recurring.interval_count",
)
PRICE_OUTPUT_ONLY = ("price_id", "active", "hint", "create_time", "update_time")


def _text(value: str, field_name: str, max_len: int, *, required: bool = False) -> str:
    value = value.strip()
    if required and not visible(value):  # "\u200b" is as empty as "  "
        raise errors.required(field_name)
    if len(value) > max_len:
        raise errors.invalid(
            f"{field_name} is longer than {max_len} characters",
            reason="FIELD_INVALID",
            field=field_name,
        )
    return value


def visible(value: str) -> bool:
    """Whether `value` shows anything: not only blanks and invisible format characters
    (zero-width spaces and joiners, the byte order mark, the word joiner: category Cf)."""
    return any(not c.isspace() and unicodedata.category(c) != "Cf" for c in value)


def clean_position(position: int, field_name: str = "position") -> int:
    if not 0 <= position <= INT32_MAX:
        raise errors.invalid(f"{field_name} must be between 0 and {INT32_MAX}", field=field_name)
    return position


def clean_entitlements(
    items: Iterable[Entitlement], field_name: str = "entitlements"
) -> tuple[Entitlement, ...]:
    out = []
    seen = set()
    for i, item in enumerate(items):
        where = f"{field_name}[{i}]"
        feature = _text(item.feature, f"{where}.feature", 100, required=True)
        value = _text(item.value, f"{where}.value", 200)
        if feature in seen:
            raise errors.invalid(
                f"{field_name} names feature {errors.shown(feature)} twice", field=where
            )
        seen.add(feature)
        out.append(Entitlement(feature, value, *_entitlement_kind(item, where)))
    if len(out) > MAX_ENTITLEMENTS:
        raise errors.invalid(
            f"{field_name} holds more than {MAX_ENTITLEMENTS} entries", field=field_name
        )
    return tuple(out)


def _entitlement_kind(item: Entitlement, where: str) -> tuple[str, str, str, str]:
    """(metric, limit, credit_type, amount), cleaned: both of a kind's pair, one kind at most."""
    metric, limit = item.metric.strip(), item.limit.strip()
    ctype, amount = item.credit_type.strip(), item.amount.strip()
    if (metric or limit) and (ctype or amount):
        raise errors.invalid(
            f"{where} is either metered (metric, limit) or credit-backed (credit_type, amount)",
            field=where,
        )
    if metric or limit:
        if not metric:
            raise errors.required(f"{where}.metric")
        if not METRIC_CODE_RE.fullmatch(metric):
            raise errors.invalid(
                f"{where}.metric must be a metric code (letters, digits, '_', '-', '.')",
                field=f"{where}.metric",
            )
        if not limit:
            raise errors.required(f"{where}.limit")
        return metric, clean_credit_amount(limit, f"{where}.limit"), "", ""
    if ctype or amount:
        if not ctype:
            raise errors.required(f"{where}.credit_type")
        if not CREDIT_TYPE_RE.fullmatch(ctype):
            raise errors.invalid(
                f"{where}.credit_type must be letters, digits, '_', '.', ':' or '-'",
                field=f"{where}.credit_type",
            )
        if not amount:
            raise errors.required(f"{where}.amount")
        return "", "", ctype, clean_credit_amount(amount, f"{where}.amount")
    return "", "", "", ""


def clean_stripe_id(value: str | None, field_name: str) -> str | None:
    if value is None:
        return None
    return _text(value, field_name, 100) or None


def clean_credit_grants(
    items: Iterable[CreditGrant],
    price_type: str,
    field_name: str = "credit_grants",
    expiry_name: str = "expires_after_seconds",
) -> tuple[CreditGrant, ...]:
    """`expiry_name` is how errors name a grant's expiry: the contract's spelling, or
    catalog-as-code's `expires_after_sec`."""
    out = []
    for i, grant in enumerate(items):
        where = f"{field_name}[{i}]"
        credit_type = grant.credit_type.strip()
        if not credit_type:
            raise errors.required(f"{where}.credit_type")
        if not CREDIT_TYPE_RE.fullmatch(credit_type):
            raise errors.invalid(
                f"{where}.credit_type must be 1-100 letters, digits and _.:- ",
                field=f"{where}.credit_type",
            )
        if not grant.amount.strip():
            raise errors.required(f"{where}.amount")
        amount = clean_credit_amount(grant.amount.strip(), f"{where}.amount")
        if grant.expires_after_sec < 0:
            raise errors.invalid(
                f"{where}.{expiry_name} must not be negative", field=f"{where}.{expiry_name}"
            )
        if grant.expires_after_sec > MAX_GRANT_EXPIRY_SEC:
            raise errors.invalid(
                f"{where}.{expiry_name} is at most {MAX_GRANT_EXPIRY_SEC} (100 years; "
                "0 never expires)",
                field=f"{where}.{expiry_name}",
            )
        if not -INT32_MAX - 1 <= grant.priority <= INT32_MAX:  # the contract's int32
            raise errors.invalid(
                f"{where}.priority must be between {-INT32_MAX - 1} and {INT32_MAX}",
                field=f"{where}.priority",
            )
        if not (grant.on_purchase or grant.on_renewal):
            raise errors.invalid(
                f"{where} grants nothing: set on_purchase, on_renewal or both", field=where
            )
        if grant.on_renewal and price_type == ONE_TIME:
            raise errors.invalid(
                f"{where}.on_renewal is set on a one-time price, which never renews",
                field=f"{where}.on_renewal",
            )
        out.append(replace(grant, credit_type=credit_type, amount=amount))
    if len(out) > MAX_CREDIT_GRANTS:
        raise errors.invalid(
            f"{field_name} holds more than {MAX_CREDIT_GRANTS} grants", field=field_name
        )
    return tuple(out)


def clean_currency(currency: str) -> str:
    """An active ISO 4217 currency with minor units (so no gold, test or fund codes) the
    provider can hold (tollbooth.currencies: not IQD, LYD, CLF or UYW), lower case as Stripe
    writes it. The ISO list comes from the maintained `iso4217` package."""
    currency = currency.strip()
    if not currency:
        raise errors.required("currency")
    code = currency.lower()
    if not CURRENCY_RE.fullmatch(currency) or not currencies.known(code):
        raise errors.invalid(
            "currency must be an ISO 4217 currency code such as 'usd' or 'eur'",
            reason="CURRENCY_INVALID",
            field="currency",
        )
    return code


def provider_amount_refusal(amount: int, currency: str) -> str:
    """Why the provider refuses `amount` minor units of `currency` (a clean, lower-case code)
    though it is within its limits, as a sentence; empty when it takes it. A three-decimal
    currency's amount must end in 0 (1005 kwd, 1.005 KWD, is refused; 1000 or 1010 is taken);
    an ISK amount must be whole kronur (150 isk, 1.50 ISK, is refused); a currency the provider
    holds no minor unit for (a price stored before `clean_currency` refused IQD) is refused."""
    return currencies.refusal(amount, currency)


def clean_price_shape(price_type: str, interval: str, interval_count: int) -> tuple[str, str, int]:
    """Type and recurrence: recurring iff RECURRING; an interval_count of 0 means 1.

    An unspecified type follows the recurrence: recurring when an interval is given, else
    one-time, so a plain `{"currency", "unit_amount"}` body is a one-time price.
    """
    if not price_type:
        price_type = RECURRING if interval else ONE_TIME
    if price_type not in PRICE_TYPES:
        raise errors.invalid("type must be one_time or recurring", field="type")
    if price_type == ONE_TIME:
        if interval or interval_count:
            raise errors.invalid("a one-time price has no recurring interval", field="recurring")
        return price_type, "", 0
    if not interval:
        raise errors.required("recurring.interval")
    if interval not in INTERVALS:
        raise errors.invalid(
            "recurring.interval must be day, week, month or year", field="recurring.interval"
        )
    count = interval_count or 1
    if not 1 <= count <= MAX_INTERVAL_COUNT[interval]:
        raise errors.invalid(
            f"recurring.interval_count must be between 1 and {MAX_INTERVAL_COUNT[interval]} "
            f"for {interval}",
            field="recurring.interval_count",
        )
    return price_type, interval, count


def clean_product_key(key: str) -> str:
    key = _text(key, "key", 40)
    if key and not PRODUCT_KEY_RE.fullmatch(key):
        raise errors.invalid("key must be 1-40 letters, digits and _.:- ", field="key")
    return key


def clean_product(fields: ProductFields) -> ProductFields:
    return ProductFields(
        name=_text(fields.name, "name", 200, required=True),
        key=clean_product_key(fields.key),
        description=_text(fields.description, "description", 5000),
        position=clean_position(fields.position),
        stripe_product_id=clean_stripe_id(fields.stripe_product_id, "stripe_product_id"),
        metadata=clean_provider_metadata(fields.metadata, reserved=PROVIDER_PRODUCT_KEY),
        entitlements=clean_entitlements(fields.entitlements),
    )


def clean_price(
    fields: PriceFields,
    *,
    require_product: bool = True,
    expiry_name: str = "expires_after_seconds",
    new_amount: bool = True,
) -> PriceFields:
    """A valid price. Without require_product the product is left unnamed (catalog files).
    Without new_amount (an update: amount and currency never change) a stored amount or
    currency the provider refuses is left alone, so such a price can still be renamed or
    unlinked."""
    price_type, interval, count = clean_price_shape(
        fields.type, fields.interval, fields.interval_count
    )
    if fields.unit_amount < 0:
        raise errors.invalid(
            "unit_amount must be a non-negative integer of minor units", field="unit_amount"
        )
    if fields.unit_amount > MAX_UNIT_AMOUNT:
        raise errors.invalid(
            f"unit_amount is over the provider's {MAX_UNIT_AMOUNT} minor units",
            reason="PRICE_AMOUNT_INVALID",
            field="unit_amount",
        )
    product_id = _text(fields.product_id, "product_id", 40, required=require_product)
    if new_amount or currencies.known(fields.currency.strip().lower()):
        currency = clean_currency(fields.currency)
    else:  # stored in IQD, say, before `clean_currency` refused it: left alone, as the amount
        currency = fields.currency
    if new_amount and (refusal := provider_amount_refusal(fields.unit_amount, currency)):
        raise errors.invalid(
            f"unit_amount: {refusal}", reason="PRICE_AMOUNT_INVALID", field="unit_amount"
        )
    return PriceFields(
        product_id=product_id,
        currency=currency,
        unit_amount=fields.unit_amount,
        type=price_type,
        interval=interval,
        interval_count=count,
        lookup_key=_text(fields.lookup_key, "lookup_key", 200),
        stripe_price_id=clean_stripe_id(fields.stripe_price_id, "stripe_price_id"),
        stackable=fields.stackable,
        subscription_group=_text(fields.subscription_group, "subscription_group", 200),
        credit_grants=clean_credit_grants(
            fields.credit_grants, price_type, expiry_name=expiry_name
        ),
        entitlements=clean_entitlements(fields.entitlements),
        position=clean_position(fields.position),
        nickname=_text(fields.nickname, "nickname", 200),
        metadata=clean_provider_metadata(fields.metadata),
    )


def mask_paths(
    paths: Iterable[str],
    mutable: tuple[str, ...],
    output_only: tuple[str, ...],
    immutable: tuple[str, ...] = (),
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(mutable paths to apply, immutable paths named). "*" means every mutable field."""
    if is_full_mask(paths):
        return mutable, ()
    paths = [p.strip() for p in paths if p.strip()]
    apply: list[str] = []
    named_immutable: list[str] = []
    for path in paths:
        if path in mutable:
            if path not in apply:
                apply.append(path)
        elif path in immutable:
            named_immutable.append(path)
        elif path not in output_only:
            raise errors.unknown_mask_path(path)
    return tuple(apply), tuple(named_immutable)


def is_full_mask(paths: Iterable[str]) -> bool:
    """ "*" names every mutable field (AIP-134); an empty mask names none."""
    return [p.strip() for p in paths if p.strip()] == ["*"]
