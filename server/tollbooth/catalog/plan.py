"""The difference between a catalog file and the stored catalog, as ordered actions. Pure.

Matching: a product is the one whose `key` equals the file's key (keys are unique among all
products; an archived one is restored). A price is the active price
with the file's lookup_key. Mutable fields are updated in place; a price whose currency,
amount, type or recurrence differs, or that sits under another product, is replaced the
Stripe way: the old price is archived and a new one is created with the same lookup_key.
Entries absent from the file are archived only with archive_missing.

Actions come in the order they can run: products are created, restored and updated; then
prices are archived (freeing their lookup_keys), updated and created; last, missing products
are archived.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tollbooth.catalog import fields as f
from tollbooth.catalog.fields import PriceFields, ProductFields
from tollbooth.catalog.spec import CatalogSpec

PRICE_SHAPE = ("currency", "unit_amount", "type", "interval", "interval_count")


class PlanError(ValueError):
    """The stored catalog cannot be matched to the file unambiguously."""


@dataclass(frozen=True)
class StoredProduct:
    id: str
    active: bool
    seq: int
    fields: ProductFields


@dataclass(frozen=True)
class StoredPrice:
    id: str
    active: bool
    seq: int
    fields: PriceFields


@dataclass(frozen=True)
class Change:
    field: str
    old: Any
    new: Any

    def describe(self) -> str:
        return f"{self.field} {_show(self.old)} -> {_show(self.new)}"


@dataclass(frozen=True)
class CreateProduct:
    key: str
    fields: ProductFields

    def describe(self) -> str:
        return (
            f"create product {self.key}: name={self.fields.name!r} position={self.fields.position}"
        )


@dataclass(frozen=True)
class RestoreProduct:
    key: str
    product_id: str

    def describe(self) -> str:
        return f"restore product {self.key} ({self.product_id})"


@dataclass(frozen=True)
class UpdateProduct:
    key: str
    product_id: str
    fields: ProductFields
    changes: tuple[Change, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(c.field for c in self.changes)

    def describe(self) -> str:
        return f"update product {self.key} ({self.product_id}): " + "; ".join(
            c.describe() for c in self.changes
        )


@dataclass(frozen=True)
class ArchiveProduct:
    label: str
    product_id: str

    def describe(self) -> str:
        return f"archive product {self.label} ({self.product_id}): missing from file"


@dataclass(frozen=True)
class CreatePrice:
    product_key: str
    product_id: str | None  # None: the product is created by this plan
    fields: PriceFields

    def describe(self) -> str:
        p = self.fields
        every = f" every {p.interval_count} {p.interval}" if p.type == f.RECURRING else ""
        return (
            f"create price {p.lookup_key} in product {self.product_key}: "
            f"{p.unit_amount} {p.currency} {p.type}{every}"
        )


@dataclass(frozen=True)
class UpdatePrice:
    lookup_key: str
    price_id: str
    fields: PriceFields
    changes: tuple[Change, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(c.field for c in self.changes)

    def describe(self) -> str:
        return f"update price {self.lookup_key} ({self.price_id}): " + "; ".join(
            c.describe() for c in self.changes
        )


@dataclass(frozen=True)
class ArchivePrice:
    label: str
    price_id: str
    why: str

    def describe(self) -> str:
        return f"archive price {self.label} ({self.price_id}): {self.why}"


Action = (
    CreateProduct
    | RestoreProduct
    | UpdateProduct
    | ArchiveProduct
    | CreatePrice
    | UpdatePrice
    | ArchivePrice
)


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]

    def __bool__(self) -> bool:
        return bool(self.actions)

    def lines(self) -> list[str]:
        return [a.describe() for a in self.actions]


def plan(
    spec: CatalogSpec,
    products: Sequence[StoredProduct],
    prices: Sequence[StoredPrice],
    *,
    archive_missing: bool = False,
) -> Plan:
    """The actions that turn the stored catalog into `spec`. `prices` are the active prices."""
    product_steps: list[Action] = []
    price_archives: list[ArchivePrice] = []
    price_updates: list[Action] = []
    price_creates: list[Action] = []
    product_archives: list[Action] = []

    by_key: dict[str, list[StoredProduct]] = {}
    for product in products:
        key = product.fields.key
        if key:
            by_key.setdefault(key, []).append(product)
    by_lookup_key = {p.fields.lookup_key: p for p in prices if p.active and p.fields.lookup_key}
    matched_products: set[str] = set()
    kept_prices: set[str] = set()
    archived_prices: set[str] = set()

    def archive(price: StoredPrice, why: str) -> None:
        if price.id not in archived_prices:
            archived_prices.add(price.id)
            price_archives.append(ArchivePrice(price.fields.lookup_key or price.id, price.id, why))

    for desired in spec.products:
        stored = _match_product(desired.key, by_key.get(desired.key, []))
        if stored is None:
            product_steps.append(CreateProduct(desired.key, desired.fields))
        else:
            matched_products.add(stored.id)
            if not stored.active:
                product_steps.append(RestoreProduct(desired.key, stored.id))
            changes = _changes(stored.fields, desired.fields, f.PRODUCT_MUTABLE)
            if changes:
                product_steps.append(UpdateProduct(desired.key, stored.id, desired.fields, changes))
        product_id = stored.id if stored else None
        for wanted in desired.prices:
            current = by_lookup_key.get(wanted.lookup_key)
            if current is None:
                price_creates.append(CreatePrice(desired.key, product_id, wanted))
                continue
            if current.fields.product_id != product_id:
                archive(current, f"moves to product {desired.key}")
                price_creates.append(CreatePrice(desired.key, product_id, wanted))
                continue
            shape = _changes(current.fields, wanted, PRICE_SHAPE)
            if shape:
                archive(current, "replaced: " + "; ".join(c.describe() for c in shape))
                price_creates.append(CreatePrice(desired.key, product_id, wanted))
                continue
            kept_prices.add(current.id)
            changes = _changes(current.fields, wanted, f.PRICE_MUTABLE)
            if changes:
                price_updates.append(UpdatePrice(wanted.lookup_key, current.id, wanted, changes))

    if archive_missing:
        for price in prices:
            if (
                price.active
                and price.fields.product_id in matched_products
                and price.id not in kept_prices
            ):
                archive(price, "missing from file")
        for product in products:
            if product.active and product.id not in matched_products:
                label = product.fields.key or repr(product.fields.name)
                product_archives.append(ArchiveProduct(label, product.id))

    return Plan(
        tuple([*product_steps, *price_archives, *price_updates, *price_creates, *product_archives])
    )


def _match_product(key: str, candidates: Iterable[StoredProduct]) -> StoredProduct | None:
    candidates = list(candidates)
    active = [p for p in candidates if p.active]
    if len(active) > 1:
        ids = ", ".join(p.id for p in active)
        raise PlanError(f"active products {ids} share key {key!r}; archive all but one")
    if active:
        return active[0]
    return max(candidates, key=lambda p: p.seq, default=None)


def _changes(stored: object, desired: object, names: Iterable[str]) -> tuple[Change, ...]:
    out = []
    for name in names:
        new = getattr(desired, name)
        if name in ("stripe_product_id", "stripe_price_id") and new is None:
            continue  # not in the file: linked by the provider sync, not managed here
        old = getattr(stored, name)
        if _comparable(old) != _comparable(new):
            out.append(Change(name, old, new))
    return tuple(out)


def _comparable(value: Any) -> Any:
    if hasattr(value, "items"):
        return dict(value)
    return value


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if hasattr(value, "as_json"):
        return ", ".join(f"{k}={v!r}" for k, v in value.as_json().items() if v not in ("", 0))
    if hasattr(value, "items"):
        return repr(dict(value))
    return repr(value)
