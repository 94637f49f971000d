"""A catalog file (parsed YAML) -> the desired catalog, validated and normalised. Pure.

The format is documented in tollbooth.catalog.as_code. Values go through the same cleaning
as the RPCs, so a file that parses here is one the service accepts, and its values compare
equal to what the service stores.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from tollbooth import text
from tollbooth.catalog import fields as f
from tollbooth.catalog.fields import CreditGrant, Entitlement, PriceFields, ProductFields

KEY_RE = f.PRODUCT_KEY_RE

PRODUCT_KEYS = {
    "key",
    "name",
    "description",
    "position",
    "metadata",
    "entitlements",
    "stripe_product_id",
    "prices",
}
PRICE_KEYS = {
    "lookup_key",
    "currency",
    "unit_amount",
    "type",
    "interval",
    "interval_count",
    "nickname",
    "position",
    "stackable",
    "subscription_group",
    "metadata",
    "credit_grants",
    "entitlements",
    "stripe_price_id",
}
GRANT_KEYS = {"credit_type", "amount", "on_purchase", "on_renewal", "expires_after_sec", "priority"}
ENTITLEMENT_KEYS = {"feature", "value", "metric", "limit", "credit_type", "amount"}


class SpecError(ValueError):
    """The catalog file is not in the documented format."""


@dataclass(frozen=True)
class DesiredProduct:
    key: str
    fields: ProductFields
    prices: tuple[PriceFields, ...]


@dataclass(frozen=True)
class CatalogSpec:
    products: tuple[DesiredProduct, ...]


@dataclass(frozen=True)
class _NonDecimal:
    """An integer YAML 1.1 reads from a non-decimal literal (0x10, 017, 0b101, 1_000, the
    sexagesimal 1:30; and YAML 1.2's 0o17): kept as written so that the field it lands in
    refuses it by name, never a number its author did not write."""

    text: str

    def __str__(self) -> str:
        return self.text


DECIMAL_INT_RE = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")  # 017 is YAML 1.1 octal, refused
_OCTAL_1_2_RE = re.compile(r"^[-+]?0o[0-7_]+$")


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses a key written twice in one mapping (plain YAML keeps the last
    silently, so the file would mean something its author did not write). A merge (`<<`)
    may still be overridden, as YAML defines. Integers are decimal only (`_NonDecimal`)."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> object:  # type: ignore[override]
        text = str(node.value)
        if DECIMAL_INT_RE.fullmatch(text):
            return int(text)
        return _NonDecimal(text)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _OCTAL_1_2_RE, list("-+0"))


def load(path: str | Path) -> CatalogSpec:
    with open(path, encoding="utf-8") as fh:
        try:
            document = yaml.load(fh, Loader=_Loader)  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise SpecError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse(document)


def parse(document: object) -> CatalogSpec:
    """Validate a parsed document. Raises SpecError (shape) or DomainError (values)."""
    if not isinstance(document, Mapping):
        raise SpecError("the catalog file must be a mapping with a 'products' list")
    _known(document, {"version", "products"}, "catalog")
    version = document.get("version", 1)
    if version != 1 or isinstance(version, bool):
        raise SpecError(f"version must be 1, got {version!r}")
    raw_products = _list(document.get("products"), "products", required=True)
    products = []
    product_keys: set[str] = set()
    lookup_keys: set[str] = set()
    for index, raw in enumerate(raw_products):
        product = _product(raw, index)
        if product.key in product_keys:
            raise SpecError(f"product key {product.key!r} appears twice")
        product_keys.add(product.key)
        for price in product.prices:
            if price.lookup_key in lookup_keys:
                raise SpecError(f"lookup_key {price.lookup_key!r} appears twice")
            lookup_keys.add(price.lookup_key)
        products.append(product)
    return CatalogSpec(tuple(products))


def _product(raw: object, index: int) -> DesiredProduct:
    where = f"products[{index}]"
    data = _mapping(raw, where)
    _known(data, PRODUCT_KEYS, where)
    key = _str(data.get("key"), f"{where}.key", required=True)
    if not KEY_RE.fullmatch(key):
        raise SpecError(f"{where}.key must be 1-40 letters, digits and _.:- (got {key!r})")
    where = f"product {key!r}"
    metadata = _string_map(data.get("metadata"), f"{where}.metadata")
    fields = ProductFields(
        name=_str(data.get("name"), f"{where}.name", required=True),
        key=key,
        description=_str(data.get("description"), f"{where}.description", multiline=True),
        position=_position(data.get("position"), index, f"{where}.position"),
        stripe_product_id=_optional_str(
            data.get("stripe_product_id"), f"{where}.stripe_product_id"
        ),
        metadata=metadata,
        entitlements=_entitlements(data.get("entitlements"), f"{where}.entitlements"),
    )
    prices = tuple(
        _price(item, i, key) for i, item in enumerate(_list(data.get("prices"), f"{where}.prices"))
    )
    return DesiredProduct(key=key, fields=f.clean_product(fields), prices=prices)


def _price(raw: object, index: int, product_key: str) -> PriceFields:
    where = f"product {product_key!r} prices[{index}]"
    data = _mapping(raw, where)
    _known(data, PRICE_KEYS, where)
    lookup_key = _str(data.get("lookup_key"), f"{where}.lookup_key", required=True)
    where = f"price {lookup_key!r}"
    interval = _str(data.get("interval"), f"{where}.interval")
    price_type = _str(data.get("type"), f"{where}.type")
    price_type = price_type or (f.RECURRING if interval else f.ONE_TIME)
    fields = PriceFields(
        currency=_str(data.get("currency"), f"{where}.currency", required=True),
        unit_amount=_int(data.get("unit_amount"), f"{where}.unit_amount", required=True),
        type=price_type,
        interval=interval,
        interval_count=_int(data.get("interval_count"), f"{where}.interval_count"),
        lookup_key=lookup_key,
        stripe_price_id=_optional_str(data.get("stripe_price_id"), f"{where}.stripe_price_id"),
        stackable=_bool(data.get("stackable"), f"{where}.stackable", False),
        subscription_group=_str(data.get("subscription_group"), f"{where}.subscription_group"),
        credit_grants=tuple(
            _grant(item, f"{where}.credit_grants[{i}]")
            for i, item in enumerate(_list(data.get("credit_grants"), f"{where}.credit_grants"))
        ),
        entitlements=_entitlements(data.get("entitlements"), f"{where}.entitlements"),
        position=_position(data.get("position"), index, f"{where}.position"),
        nickname=_str(data.get("nickname"), f"{where}.nickname"),
        metadata=_string_map(data.get("metadata"), f"{where}.metadata"),
    )
    cleaned = f.clean_price(fields, require_product=False, expiry_name="expires_after_sec")
    return replace(cleaned, product_id="")


def _grant(raw: object, where: str) -> CreditGrant:
    data = _mapping(raw, where)
    _known(data, GRANT_KEYS, where)
    amount = data.get("amount")
    if isinstance(amount, float):
        raise SpecError(f"{where}.amount must be quoted ('2.5'), not a YAML float")
    return CreditGrant(
        credit_type=_str(data.get("credit_type"), f"{where}.credit_type", required=True),
        amount=_str(amount, f"{where}.amount", required=True),
        on_purchase=_bool(data.get("on_purchase"), f"{where}.on_purchase", True),
        on_renewal=_bool(data.get("on_renewal"), f"{where}.on_renewal", False),
        expires_after_sec=_int(data.get("expires_after_sec"), f"{where}.expires_after_sec"),
        priority=_int(data.get("priority"), f"{where}.priority"),
    )


def _entitlements(raw: object, where: str) -> tuple[Entitlement, ...]:
    out = []
    for i, item in enumerate(_list(raw, where)):
        if isinstance(item, str):
            out.append(Entitlement(_str(item, f"{where}[{i}]")))
            continue
        data = _mapping(item, f"{where}[{i}]")
        _known(data, ENTITLEMENT_KEYS, f"{where}[{i}]")
        out.append(
            Entitlement(
                _str(data.get("feature"), f"{where}[{i}].feature", required=True),
                _str(data.get("value"), f"{where}[{i}].value"),
                _str(data.get("metric"), f"{where}[{i}].metric"),
                _str(data.get("limit"), f"{where}[{i}].limit"),
                _str(data.get("credit_type"), f"{where}[{i}].credit_type"),
                _str(data.get("amount"), f"{where}[{i}].amount"),
            )
        )
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Typed access to YAML values: YAML guesses types, money and keys must not be guessed.


def _known(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{where} must be a mapping")
    return value


def _list(value: object, where: str, *, required: bool = False) -> list[Any]:
    if value is None:
        if required:
            raise SpecError(f"{where} is required")
        return []
    if not isinstance(value, list):
        raise SpecError(f"{where} must be a list")
    return value


def _str(value: object, where: str, *, required: bool = False, multiline: bool = False) -> str:
    if value is None:
        if required:
            raise SpecError(f"{where} is required")
        return ""
    if isinstance(value, bool) or isinstance(value, float):
        raise SpecError(f"{where} must be a string; quote it")
    if isinstance(value, _NonDecimal):
        raise SpecError(
            f"{where}: {value.text!r} is a non-decimal integer in YAML; write the number in"
            " decimal, or quote it to mean the text"
        )
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise SpecError(f"{where} must be a string")
    # The RPCs' edge rule (PostgreSQL text cannot hold NUL; no other control character either,
    # but tab and line breaks in a description or a metadata value).
    problem = text.control_problem(value, multiline=multiline)
    if problem is not None:
        raise SpecError(f"{where} {problem}")
    if required and not value.strip():
        raise SpecError(f"{where} is required")
    return value


def _optional_str(value: object, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _int(value: object, where: str, *, required: bool = False) -> int:
    if value is None:
        if required:
            raise SpecError(f"{where} is required")
        return 0
    if isinstance(value, _NonDecimal):
        raise SpecError(
            f"{where} must be a decimal integer, got {value.text!r} (hexadecimal, octal,"
            " binary, 1_000 and 1:30 forms are refused, not converted)"
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where} must be an integer (minor units for amounts), got {value!r}")
    return value


def _bool(value: object, where: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SpecError(f"{where} must be true or false")
    return value


def _position(value: object, index: int, where: str) -> int:
    """Defaults to the entry's place in its list (1-based); an explicit one must be >= 1."""
    if value is None:
        return index + 1
    position = _int(value, where)
    if position < 1:
        raise SpecError(f"{where} must be at least 1")
    return position


def _string_map(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    data = _mapping(value, where)
    return {
        _str(k, f"{where} key"): _str(v, f"{where}.{k}", multiline=True) for k, v in data.items()
    }
