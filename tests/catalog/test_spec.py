"""Pure parsing of catalog files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tollbooth.catalog import fields as f
from tollbooth.catalog import spec
from tollbooth.catalog.spec import SpecError
from tollbooth.errors import DomainError

EXAMPLE = Path(spec.__file__).with_name("example_catalog.yaml")


def doc(**price) -> dict:  # type: ignore[no-untyped-def]
    base = {"lookup_key": "pro_monthly", "currency": "usd", "unit_amount": 900}
    base.update(price)
    return {"products": [{"key": "pro", "name": "Pro", "prices": [base]}]}


def test_example_catalog_parses():
    catalog = spec.load(EXAMPLE)
    keys = [p.key for p in catalog.products]
    assert keys and len(set(keys)) == len(keys)
    assert all(p.prices for p in catalog.products)


def test_defaults_position_from_file_order_and_carries_the_key():
    catalog = spec.parse(
        {
            "products": [
                {
                    "key": "a",
                    "name": "A",
                    "prices": [
                        {"lookup_key": "a1", "currency": "USD", "unit_amount": 1},
                        {
                            "lookup_key": "a2",
                            "currency": "usd",
                            "unit_amount": 2,
                            "interval": "month",
                        },
                    ],
                },
                {"key": "b", "name": "B", "position": 9},
            ]
        }
    )
    a, b = catalog.products
    assert (a.fields.position, b.fields.position) == (1, 9)
    assert a.fields.key == "a" and a.fields.metadata == {}
    one_time, monthly = a.prices
    assert (one_time.position, monthly.position) == (1, 2)
    assert one_time.type == f.ONE_TIME and one_time.currency == "usd"
    assert (monthly.type, monthly.interval, monthly.interval_count) == (f.RECURRING, "month", 1)


def test_credit_grant_defaults_and_normalised_amount():
    catalog = spec.parse(
        doc(
            interval="month",
            credit_grants=[
                {"credit_type": "api_calls", "amount": "010.50"},
                {"credit_type": "api_calls", "amount": 5, "on_renewal": True, "on_purchase": False},
            ],
        )
    )
    first, second = catalog.products[0].prices[0].credit_grants
    assert (first.amount, first.on_purchase, first.on_renewal) == ("10.5", True, False)
    assert (second.amount, second.on_purchase, second.on_renewal) == ("5", False, True)


@pytest.mark.parametrize(
    "document",
    [
        None,
        {"products": "pro"},
        {"version": 2, "products": []},
        {"products": [], "extra": 1},
        doc(unit_amount=9.99),
        doc(unit_amount="900"),
        doc(unit_amount=True),
        doc(colour="red"),
        doc(lookup_key=None),
        doc(position=0),
        doc(credit_grants=[{"credit_type": "api", "amount": 0.5}]),
        doc(stackable="yes"),
        {"products": [{"key": "bad key", "name": "Pro"}]},
        {"products": [{"key": "pro\n", "name": "Pro"}]},
        {"products": [{"key": "pro", "name": "A"}, {"key": "pro", "name": "B"}]},
        {
            "products": [
                {"key": "a", "name": "A", "prices": [doc()["products"][0]["prices"][0]]},
                {"key": "b", "name": "B", "prices": [doc()["products"][0]["prices"][0]]},
            ]
        },
    ],
    ids=[
        "not-a-mapping",
        "products-not-a-list",
        "version",
        "unknown-top-level",
        "float-amount",
        "string-amount",
        "bool-amount",
        "unknown-price-field",
        "lookup-key-missing",
        "position-zero",
        "float-credit-amount",
        "string-bool",
        "bad-key",
        "key-newline",
        "duplicate-product-key",
        "duplicate-lookup-key",
    ],
)
def test_malformed_file_is_a_spec_error(document):  # type: ignore[no-untyped-def]
    with pytest.raises(SpecError):
        spec.parse(document)


@pytest.mark.parametrize(
    ("price", "reason"),
    [
        ({"currency": "dollars"}, "CURRENCY_INVALID"),
        ({"unit_amount": -1}, "INVALID_ARGUMENT"),
        ({"credit_grants": [{"credit_type": "api", "amount": "NaN"}]}, "AMOUNT_INVALID"),
        ({"type": "one_time", "interval": "month"}, "INVALID_ARGUMENT"),
    ],
)
def test_invalid_values_fail_with_the_rpc_reasons(price, reason):  # type: ignore[no-untyped-def]
    with pytest.raises(DomainError) as exc:
        spec.parse(doc(**price))
    assert exc.value.reason == reason


def test_invalid_yaml_is_a_spec_error(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "catalog.yaml"
    path.write_text("products: [\n")
    with pytest.raises(SpecError):
        spec.load(path)


@pytest.mark.parametrize(
    "text",
    [
        "products:\n  - key: pro\n    name: Pro\n    name: Other\n",
        "products: []\nproducts:\n  - {key: pro, name: Pro}\n",
        "products:\n  - key: pro\n    name: Pro\n    metadata: {tier: a, tier: b}\n",
    ],
    ids=["product-field", "top-level", "metadata-key"],
)
def test_a_key_written_twice_in_one_mapping_is_a_spec_error(tmp_path, text):  # type: ignore[no-untyped-def]
    # YAML parsers keep the last of duplicate keys silently; the file meant something else.
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match="twice"):
        spec.load(path)


def test_a_file_that_is_not_utf8_is_a_spec_error(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "catalog.yaml"
    path.write_bytes("products:\n  - {key: pro, name: Pré}\n".encode("latin-1"))
    with pytest.raises(SpecError, match="UTF-8"):
        spec.load(path)


@pytest.mark.parametrize(
    "document",
    [
        {"products": [{"key": "pro", "name": "P\x00ro"}]},
        {"products": [{"key": "pro", "name": "Pro", "metadata": {"k\x00": "v"}}]},
        {"products": [{"key": "pro", "name": "Pro", "metadata": {"k": "v\x00"}}]},
        doc(lookup_key="pro\x00monthly"),
        doc(nickname="Mon\x00thly"),
        doc(credit_grants=[{"credit_type": "api\x00", "amount": "1"}]),
    ],
    ids=["name", "metadata-key", "metadata-value", "lookup-key", "nickname", "credit-type"],
)
def test_a_nul_character_anywhere_is_refused_as_the_rpcs_refuse_it(document):  # type: ignore[no-untyped-def]
    # The RPCs refuse NUL at the edge (FIELD_INVALID); PostgreSQL text cannot hold it at all.
    with pytest.raises(SpecError, match="NUL"):
        spec.parse(document)


@pytest.mark.parametrize(
    "document",
    [
        {"products": [{"key": "pro", "name": "P\x1b[1mro"}]},
        {"products": [{"key": "pro", "name": "Pro\n"}]},
        {"products": [{"key": "pro", "name": "Pro", "description": "bell\x07"}]},
        {"products": [{"key": "pro", "name": "Pro", "metadata": {"k\t": "v"}}]},
        {"products": [{"key": "pro", "name": "Pro", "metadata": {"k": "v\x7f"}}]},
        doc(lookup_key="pro\x1fmonthly"),
    ],
    ids=["name-escape", "name-newline", "description-bell", "metadata-key", "del", "lookup-key"],
)
def test_a_control_character_is_refused_as_the_rpcs_refuse_it(document):  # type: ignore[no-untyped-def]
    with pytest.raises(SpecError, match="control character"):
        spec.parse(document)


def test_a_description_and_metadata_values_may_span_lines():  # type: ignore[no-untyped-def]
    text = "Line one\r\nLine two\n\tindented"
    parsed = spec.parse(
        {"products": [{"key": "pro", "name": "Pro", "description": text, "metadata": {"k": text}}]}
    )
    assert parsed.products[0].fields.description == text
    assert parsed.products[0].fields.metadata == {"k": text}


@pytest.mark.parametrize("priority", [2**31, -(2**31) - 1, 99_999_999_999])
def test_a_grant_priority_outside_the_contracts_int32_is_refused(priority):  # type: ignore[no-untyped-def]
    # CreditGrantSpec.priority is an int32: a stored 99999999999 made every ListPrices of the
    # product fail (INTERNAL) and its grant could never be written (an int4 column).
    grant = {"credit_type": "api", "amount": "1", "priority": priority}
    with pytest.raises(DomainError) as exc:
        spec.parse(doc(credit_grants=[grant]))
    assert exc.value.reason == "INVALID_ARGUMENT"
    assert "priority" in exc.value.message


@pytest.mark.parametrize("priority", [2**31 - 1, -(2**31), 0])
def test_a_grant_priority_inside_int32_is_kept(priority):  # type: ignore[no-untyped-def]
    grant = {"credit_type": "api", "amount": "1", "priority": priority}
    price = spec.parse(doc(credit_grants=[grant])).products[0].prices[0]
    assert price.credit_grants[0].priority == priority


def test_a_grant_expiry_past_a_century_is_refused_naming_the_files_spelling():
    # A purchase dates the expiry from now: 4e11 seconds overflowed the date and failed every
    # purchase of the price in the inbox. The file names the field expires_after_sec.
    grant = {"credit_type": "api", "amount": "1", "expires_after_sec": 400_000_000_000}
    with pytest.raises(DomainError) as exc:
        spec.parse(doc(credit_grants=[grant]))
    assert exc.value.reason == "INVALID_ARGUMENT"
    assert exc.value.metadata["field"] == "credit_grants[0].expires_after_sec"
    century = {**grant, "expires_after_sec": 36_525 * 86_400}
    price = spec.parse(doc(credit_grants=[century])).products[0].prices[0]
    assert price.credit_grants[0].expires_after_sec == 36_525 * 86_400


NON_DECIMAL = ["0x10", "017", "0o17", "0b101", "1_000", "1:30", "-0x10", "00"]
NUMBER_FIELDS = {
    "unit_amount": "    unit_amount: {v}\n",
    "interval_count": "    unit_amount: 900\n    interval: month\n    interval_count: {v}\n",
    "credit_grants[0].amount": (
        "    unit_amount: 900\n    credit_grants:\n    - {{credit_type: api, amount: {v}}}\n"
    ),
    "credit_grants[0].priority": (
        "    unit_amount: 900\n    credit_grants:\n"
        "    - {{credit_type: api, amount: '1', priority: {v}}}\n"
    ),
    "credit_grants[0].expires_after_sec": (
        "    unit_amount: 900\n    credit_grants:\n"
        "    - {{credit_type: api, amount: '1', expires_after_sec: {v}}}\n"
    ),
    "entitlements[0].amount": (
        "    unit_amount: 900\n    entitlements:\n"
        "    - {{feature: reports, credit_type: api, amount: {v}}}\n"
    ),
}


@pytest.mark.parametrize("literal", NON_DECIMAL)
@pytest.mark.parametrize("field", sorted(NUMBER_FIELDS))
def test_a_non_decimal_integer_is_refused_naming_the_field(tmp_path, field, literal):  # type: ignore[no-untyped-def]
    # YAML 1.1 (PyYAML) reads 0x10 as 16, 017 as 15, 0b101 as 5, 1_000 as 1000 and 1:30 as
    # 90 (sexagesimal): an amount written that way was stored as a number nobody wrote.
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "products:\n- key: pro\n  name: Pro\n  prices:\n  - lookup_key: p\n    currency: usd\n"
        + NUMBER_FIELDS[field].format(v=literal)
    )
    with pytest.raises(SpecError) as exc:
        spec.load(path)
    assert f"price 'p'.{field}" in str(exc.value)
    assert repr(literal) in str(exc.value)


@pytest.mark.parametrize(("literal", "value"), [("900", 900), ("+900", 900), ("0", 0)])
def test_a_decimal_integer_is_kept(tmp_path, literal, value):  # type: ignore[no-untyped-def]
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "products:\n- key: pro\n  name: Pro\n  prices:\n  - lookup_key: p\n    currency: usd\n"
        f"    unit_amount: {literal}\n    credit_grants:\n    - {{credit_type: api, amount: 12}}\n"
    )
    price = spec.load(path).products[0].prices[0]
    assert price.unit_amount == value
    assert [g.amount for g in price.credit_grants] == ["12"]


def test_a_non_decimal_integer_in_a_text_field_is_refused_not_rewritten(tmp_path):  # type: ignore[no-untyped-def]
    # `name: 0x10` would have been stored as the product name "16".
    path = tmp_path / "catalog.yaml"
    path.write_text("products:\n- key: pro\n  name: 0x10\n")
    with pytest.raises(SpecError, match=r"product 'pro'\.name.*'0x10'.*quote"):
        spec.load(path)
