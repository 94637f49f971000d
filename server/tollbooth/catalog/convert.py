"""Catalog protos <-> domain values. Output-only request fields are never read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message

from billing.v1 import catalog_pb2
from tollbooth.catalog.fields import CreditGrant, Entitlement, PriceFields, ProductFields
from tollbooth.db.models import Price, Product
from tollbooth.rpc.convert import ts

# Messages already built from a snapshot's rows (`Catalog.converted`), by kind, id and hint;
# None: build each time.
Memo = dict[tuple[str, str, str], Any] | None

_TYPE_PREFIX = "PRICE_TYPE_"
_INTERVAL_PREFIX = "RECURRING_INTERVAL_"


def _enum_in(enum: object, value: int, prefix: str) -> str:
    """PRICE_TYPE_ONE_TIME -> "one_time"; unspecified -> ""; an unknown number stays visible."""
    if value == 0:
        return ""
    try:
        name = enum.Name(value)  # type: ignore[attr-defined]
    except ValueError:
        return f"unknown({value})"
    return name.removeprefix(prefix).lower()


def _enum_out(enum: object, value: str | None, prefix: str) -> int:
    if not value:
        return 0
    return int(enum.Value(prefix + value.upper()))  # type: ignore[attr-defined]


def _entitlements_in(items: object) -> tuple[Entitlement, ...]:
    return tuple(
        Entitlement(e.feature, e.value, e.metric, e.limit, e.credit_type, e.amount)  # type: ignore[attr-defined]
        for e in items  # type: ignore[attr-defined]
    )


def _entitlements_out(stored: list[Any] | None) -> list[catalog_pb2.Entitlement]:
    return [catalog_pb2.Entitlement(**Entitlement.from_json(e).as_json()) for e in stored or []]


def populated_paths(msg: Message) -> list[str]:
    """The implied update mask of AIP-134: the fields the request populated."""
    return [field.name for field, _ in msg.ListFields()]


def product_fields(msg: catalog_pb2.Product) -> ProductFields:
    return ProductFields(
        name=msg.name,
        key=msg.key,
        description=msg.description,
        position=msg.position,
        stripe_product_id=msg.stripe_product_id,
        metadata=dict(msg.metadata),
        entitlements=_entitlements_in(msg.entitlements),
    )


def price_fields(msg: catalog_pb2.Price) -> PriceFields:
    return PriceFields(
        product_id=msg.product_id,
        currency=msg.currency,
        unit_amount=msg.unit_amount,
        type=_enum_in(catalog_pb2.PriceType, msg.type, _TYPE_PREFIX),
        interval=_enum_in(catalog_pb2.RecurringInterval, msg.recurring.interval, _INTERVAL_PREFIX),
        interval_count=msg.recurring.interval_count,
        lookup_key=msg.lookup_key,
        stripe_price_id=msg.stripe_price_id,
        stackable=msg.stackable,
        subscription_group=msg.subscription_group,
        credit_grants=tuple(
            CreditGrant(
                credit_type=g.credit_type,
                amount=g.amount,
                on_purchase=g.on_purchase,
                on_renewal=g.on_renewal,
                expires_after_sec=g.expires_after_seconds,
                priority=g.priority,
            )
            for g in msg.credit_grants
        ),
        entitlements=_entitlements_in(msg.entitlements),
        position=msg.position,
        nickname=msg.nickname,
        metadata=dict(msg.metadata),
    )


def _grant_out(stored: dict[str, Any]) -> catalog_pb2.CreditGrantSpec:
    """A stored grant spec (its keys are CreditGrant's fields) as the contract spells it."""
    fields = dict(stored)
    fields["expires_after_seconds"] = fields.pop("expires_after_sec", 0)
    return catalog_pb2.CreditGrantSpec(**fields)


def product_out(product: Product) -> catalog_pb2.Product:
    return catalog_pb2.Product(
        product_id=product.id,
        key=product.key or "",
        name=product.name,
        description=product.description,
        active=product.active,
        position=product.position,
        stripe_product_id=product.stripe_product_id or "",
        metadata=product.attributes or {},
        entitlements=_entitlements_out(product.entitlements),
        create_time=ts(product.created_at),
        update_time=ts(product.updated_at),
    )


def price_out(price: Price, hint: str = "") -> catalog_pb2.Price:
    recurring = None
    if price.interval:
        recurring = catalog_pb2.Recurring(
            interval=catalog_pb2.RecurringInterval.ValueType(
                _enum_out(catalog_pb2.RecurringInterval, price.interval, _INTERVAL_PREFIX)
            ),
            interval_count=price.interval_count or 1,
        )
    return catalog_pb2.Price(
        price_id=price.id,
        product_id=price.product_id,
        currency=price.currency,
        unit_amount=price.unit_amount,
        type=catalog_pb2.PriceType.ValueType(
            _enum_out(catalog_pb2.PriceType, price.type, _TYPE_PREFIX)
        ),
        recurring=recurring,
        lookup_key=price.lookup_key or "",
        stripe_price_id=price.stripe_price_id or "",
        stackable=price.stackable,
        subscription_group=price.subscription_group or "",
        credit_grants=[_grant_out(g) for g in price.credit_grants or []],
        entitlements=_entitlements_out(price.entitlements),
        active=price.active,
        position=price.position,
        nickname=price.nickname,
        metadata=price.attributes or {},
        hint=catalog_pb2.PurchaseHint.ValueType(
            _enum_out(catalog_pb2.PurchaseHint, hint, "PURCHASE_HINT_")
        ),
        create_time=ts(price.created_at),
        update_time=ts(price.updated_at),
    )


def _product_message(memo: Memo, product: Product) -> catalog_pb2.Product:
    """`product_out(product)`, built once per snapshot when `memo` (the snapshot's) is given.
    A kept message is shared: it is only ever copied into a response, never changed."""
    if memo is None:
        return product_out(product)
    key = ("product", product.id, "")
    found = memo.get(key)
    if found is None:
        found = memo[key] = product_out(product)
    return found  # type: ignore[no-any-return]


def _price_message(memo: Memo, price: Price, hint: str) -> catalog_pb2.Price:
    """`price_out(price, hint)`, built once per snapshot and hint (as `_product_message`):
    each caller gets the message of its own hint, never another caller's."""
    if memo is None:
        return price_out(price, hint)
    key = ("price", price.id, hint)
    found = memo.get(key)
    if found is None:
        found = memo[key] = price_out(price, hint)
    return found  # type: ignore[no-any-return]


def list_products_out(
    products: Sequence[Product], next_page_token: str, memo: Memo = None
) -> catalog_pb2.ListProductsResponse:
    return catalog_pb2.ListProductsResponse(
        products=[_product_message(memo, p) for p in products], next_page_token=next_page_token
    )


def list_prices_out(
    prices: Sequence[Price], hints: Sequence[str], next_page_token: str, memo: Memo = None
) -> catalog_pb2.ListPricesResponse:
    return catalog_pb2.ListPricesResponse(
        prices=[_price_message(memo, p, h) for p, h in zip(prices, hints, strict=True)],
        next_page_token=next_page_token,
    )
