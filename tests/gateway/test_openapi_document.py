"""The OpenAPI document says what the server takes and what it refuses (no stack needed).

Schemathesis' positive mode sends what the document calls valid and expects it accepted; its
negative mode sends what the document calls invalid and expects a 4xx. So the document must
not call required what the server treats as optional (a PATCH body, an empty batch), and must
state the rules the server refuses by (controls, blanks, page sizes, mask paths, syntaxes).
The patterns are checked against the server's own functions here, so the two stay in step.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tollbooth import errors, text
from tollbooth.accounts.customers import clean_phone
from tollbooth.accounts.manage import ACCOUNT_KEY, clean_email
from tollbooth.accounts.service import validate_alias
from tollbooth.amounts import clean_credit_amount
from tollbooth.apidocs import OPENAPI
from tollbooth.catalog.fields import clean_currency
from tollbooth.credit.rules import clean_type
from tollbooth.metadata import PROVIDER_PRODUCT_KEY
from tollbooth.notifications.endpoints import clean_url
from tollbooth.openapirules import FORMATS, RESERVED_KEYS, string_pattern
from tollbooth.usage.service import CODE

DOC: dict[str, Any] = json.loads(OPENAPI.read_text())


def op(path: str, verb: str) -> dict[str, Any]:
    return DOC["paths"][path][verb]


def param(path: str, verb: str, name: str) -> dict[str, Any]:
    return next(p for p in op(path, verb)["parameters"] if p["name"] == name)


def body(path: str, verb: str) -> dict[str, Any]:
    schema = op(path, verb)["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        return DOC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def matches(pattern: str, value: str) -> bool:
    """As JSON Schema (ECMA-262) reads a pattern: `$` is the end, never before a final LF."""
    if pattern.endswith("$"):
        pattern = pattern[:-1] + r"\Z"
    return re.search(pattern, value) is not None


@pytest.mark.parametrize(
    ("path", "verb"),
    [
        ("/mgt/v1/catalog/products/{product_product_id}", "patch"),
        ("/mgt/v1/catalog/prices/{price_price_id}", "patch"),
        ("/mgt/v1/metrics/{metric_code}", "patch"),
        ("/mgt/v1/accounts/{account_id}", "patch"),
        ("/mgt/v1/events:batch", "post"),
        ("/mgt/v1/accounts", "post"),
    ],
)
def test_a_body_the_server_takes_partial_or_absent_is_not_required(path: str, verb: str) -> None:
    """PATCH changes what it names (AIP-134), an empty batch answers no results, and an
    account needs no field: none of these bodies (nor a field of them) is required."""
    assert op(path, verb)["requestBody"]["required"] is False
    assert "required" not in body(path, verb)


def test_a_body_with_a_required_field_is_required_and_names_it() -> None:
    grant = op("/mgt/v1/accounts/{account}/credits/grants", "post")["requestBody"]
    assert grant["required"] is True
    assert {"credit_type", "amount"} <= set(
        body("/mgt/v1/accounts/{account}/credits/grants", "post")["required"]
    )


def test_required_query_parameters_are_required() -> None:
    assert param("/api/v1/credits/balance", "get", "type")["required"] is True
    assert param("/mgt/v1/metrics/{code}", "delete", "request_id")["required"] is True
    assert param("/api/v1/catalog/prices", "get", "product_id")["required"] is True
    assert "required" not in param("/mgt/v1/accounts", "get", "email")


def test_page_sizes_are_not_negative() -> None:
    assert param("/mgt/v1/accounts", "get", "page_size")["schema"]["minimum"] == 0
    assert param("/mgt/v1/customers", "get", "limit")["schema"]["minimum"] == 0


def test_an_update_mask_names_fields_of_the_resource_exactly() -> None:
    pattern = param("/mgt/v1/catalog/products/{product_product_id}", "patch", "update_mask")[
        "schema"
    ]["pattern"]
    for good in ("name", "name,description", "*", "stripeProductId", "create_time"):
        assert matches(pattern, good), good
    for bad in (" name", "name ", "name,", ",name", "", "NAME", "nope", "*,name"):
        assert not matches(pattern, bad), bad


def test_request_ids_are_at_most_200_and_required_ones_hold_something_visible() -> None:
    schema = param("/mgt/v1/metrics/{code}", "delete", "request_id")["schema"]
    assert schema["maxLength"] == 200
    for blank in ("", " ", "\u200b", "\u00a0\u3000"):
        assert not matches(schema["pattern"], blank), repr(blank)
    assert matches(schema["pattern"], " key ")


def test_environment_is_one_of_its_values() -> None:
    schema = param("/mgt/v1/customers", "get", "environment")["schema"]
    assert schema["enum"] == ["", "test", "live"]


def _refused_by_edge(value: str, multiline: bool) -> bool:
    return text.control_problem(value, multiline=multiline) is not None


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    value=st.one_of(st.text(max_size=8), st.sampled_from(["a\n", "\n", "a\x85", "\u202e"])),
    multiline=st.booleans(),
)
def test_the_control_character_pattern_is_the_edges_rule(value: str, multiline: bool) -> None:
    assert matches(string_pattern(multiline, False), value) != _refused_by_edge(value, multiline)


def _server_takes(check: Any, value: str) -> bool:
    try:
        check(value)
    except errors.DomainError:
        return False
    return True


def _metric_code(value: str) -> None:
    if not CODE.fullmatch(value):
        raise errors.invalid("code", field="code")


SYNTAX = {
    "billing.v1.GrantCreditsRequest.credit_type": clean_type,
    "billing.v1.GrantCreditsRequest.amount": clean_credit_amount,
    "billing.v1.IssueTokenRequest.principal_id": validate_alias,
    "billing.v1.Metric.code": _metric_code,
}
# Where the document states less than the server takes (ASCII only; a valid value it calls
# invalid costs a negative test, never a refused positive one): the document's values are
# taken, and what it calls invalid among samples the server's own rule refuses stays refused.
UNDER = {
    "billing.v1.CreateAccountRequest.email": clean_email,
    "billing.v1.NotificationEndpoint.url": clean_url,
    "billing.v1.CreateCustomerRequest.phone": clean_phone,
}
SAMPLES = st.one_of(
    st.text(alphabet="0123456789. ", max_size=12),
    st.text(alphabet="acxt_.:-@9 \u00a0", max_size=12),
    st.text(alphabet="ab.@:/+() -#%\\", max_size=14),
    st.sampled_from(
        ["1", "0", "0.0", "00.10", "1.", ".5", "acct_x", " a ", "a\u3000", "1e5", "-1"]
        + ["a@b.c", "a@b", "a..b@c.d", "http://a", "https://a.b:80/x", "ftp://a", "+1 (2) 3-4"]
    ),
)


@pytest.mark.parametrize("name", sorted(SYNTAX))
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=SAMPLES)
def test_a_syntax_the_document_states_is_the_servers(name: str, value: str) -> None:
    pattern = f"^({FORMATS[name]})$"
    assert matches(pattern, value) == _server_takes(SYNTAX[name], value), repr(value)


@pytest.mark.parametrize("name", sorted(UNDER))
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=SAMPLES)
def test_a_value_the_document_calls_valid_the_server_takes(name: str, value: str) -> None:
    pattern = f"^({FORMATS[name]})$"
    if matches(pattern, value):
        assert _server_takes(UNDER[name], value), repr(value)


def test_the_reserved_metadata_keys_are_the_servers() -> None:
    assert RESERVED_KEYS["billing.v1.Account"] == ACCOUNT_KEY
    assert RESERVED_KEYS["billing.v1.Product"] == PROVIDER_PRODUCT_KEY


def schema_of(name: str) -> dict[str, Any]:
    return DOC["components"]["schemas"][name]


def test_a_field_the_request_may_leave_out_may_be_null_as_proto3_json_reads_it() -> None:
    """Envoy's transcoder reads `null` as the field's default (`"metadata": null` is an empty
    map): schemathesis' negative mode sent null as a wrong type and saw it accepted."""
    product = schema_of("Product")["properties"]
    assert "null" in product["key"]["type"]
    assert "null" in product["metadata"]["type"]
    assert "null" in product["entitlements"]["type"]
    grant = body("/mgt/v1/accounts/{account}/credits/grants", "post")["properties"]
    assert "null" not in grant["amount"]["type"]  # REQUIRED


def test_an_integer_field_takes_a_number_or_a_string_of_digits_in_range() -> None:
    position = schema_of("Product")["properties"]["position"]
    assert "string" in position["type"] and "integer" in position["type"]
    assert matches(position["pattern"], "12") and not matches(position["pattern"], "1.5")
    page = param("/mgt/v1/accounts", "get", "page_size")["schema"]
    assert not matches(page["pattern"], "-1")
    ttl = body("/mgt/v1/token/issue", "post")["properties"]["session_ttl_seconds"]
    assert ttl["minimum"] == 0 and not matches(ttl["pattern"], "-5")
    amount = body("/api/v1/payment/intents", "post")["properties"]["amount"]
    assert (amount["minimum"], amount["maximum"]) == (1, 99_999_999)


def test_a_grants_expiry_is_bounded_as_the_catalog_bounds_it() -> None:
    """`expires_after_seconds` past 100 years is 400 (catalog.fields); the document said any
    int64 (schemathesis' coverage phase sent 2^63 - 2 as valid and saw it refused)."""
    from tollbooth.catalog.fields import MAX_GRANT_EXPIRY_SEC

    expiry = schema_of("CreditGrantSpec")["properties"]["expires_after_seconds"]
    assert (expiry["minimum"], expiry["maximum"]) == (0, MAX_GRANT_EXPIRY_SEC)
    assert not matches(expiry["pattern"], str(MAX_GRANT_EXPIRY_SEC * 10))


def test_a_price_amount_and_an_item_quantity_are_bounded_as_the_server_bounds_them() -> None:
    """Past them the server refuses (PRICE_AMOUNT_INVALID, quantity FIELD_INVALID); the
    document said any integer (schemathesis' coverage phase sent the largest as valid)."""
    from tollbooth.catalog.fields import MAX_UNIT_AMOUNT
    from tollbooth.checkout.service import MAX_QUANTITY

    amount = schema_of("Price")["properties"]["unit_amount"]
    assert (amount["minimum"], amount["maximum"]) == (0, MAX_UNIT_AMOUNT)
    for item in ("CheckoutItem", "CheckoutLineItem"):
        quantity = schema_of(item)["properties"]["quantity"]
        assert (quantity["minimum"], quantity["maximum"]) == (0, MAX_QUANTITY)


def test_at_most_one_field_of_a_oneof() -> None:
    """`items[0]` with both `catalog_price_id` and `lookup_key` is refused by the transcoder
    ("oneof field 'price' is already set")."""
    assert {"required": ["catalog_price_id", "lookup_key"]} in schema_of("CheckoutItem")["not"][
        "anyOf"
    ]


def test_metadata_keys_are_1_to_40_characters_and_values_at_most_500() -> None:
    metadata = schema_of("Product")["properties"]["metadata"]
    assert (metadata["propertyNames"]["minLength"], metadata["propertyNames"]["maxLength"]) == (
        1,
        40,
    )
    assert metadata["additionalProperties"]["maxLength"] == 500
    assert not matches(metadata["propertyNames"]["pattern"], "a[b]")


def test_text_a_response_echoes_carries_no_input_rule() -> None:
    """A rejected event's result echoes its unique_id, control characters and all: the input
    rules are the request's, not the response's (response_schema_conformance failed)."""
    unique = schema_of("EventResult")["properties"]["unique_id"]
    assert "pattern" not in unique and "maxLength" not in unique


def test_the_event_types_are_the_servers() -> None:
    from tollbooth.notifications.envelope import KNOWN_TYPES
    from tollbooth.openapirules import EVENT_TYPES

    assert EVENT_TYPES == list(KNOWN_TYPES)


def test_free_form_properties_hold_no_nul_in_a_key_or_a_string() -> None:
    """`properties` takes any JSON shape, but the edge refuses a NUL in any of its keys or
    strings (PostgreSQL text cannot hold one): schemathesis sent one as valid data."""
    free = schema_of("JsonObject")
    assert not matches(free["propertyNames"]["pattern"], "a\x00b")
    text = next(o for o in schema_of("JsonValue")["anyOf"] if o.get("type") == "string")
    assert not matches(text["pattern"], "\x00") and matches(text["pattern"], "\x01 any")


def test_a_prices_product_id_and_the_catalogs_lists_are_bounded_as_the_catalog_bounds_them() -> (
    None
):
    """The catalog refuses a price's product_id past 40 characters, more than 20 credit grants
    and more than 100 entitlements; the document said 1000 characters and any count (make
    soak's schemathesis sent a 41-character product_id as valid)."""
    import pytest

    from tollbooth.catalog.fields import (
        MAX_CREDIT_GRANTS,
        MAX_ENTITLEMENTS,
        PriceFields,
        clean_price,
    )
    from tollbooth.errors import DomainError

    price = schema_of("Price")["properties"]
    most = price["product_id"]["maxLength"]
    fields = PriceFields(currency="usd", unit_amount=100, type="one_time")
    clean_price(dataclasses.replace(fields, product_id="p" * most))  # the longest is taken
    with pytest.raises(DomainError):
        clean_price(dataclasses.replace(fields, product_id="p" * (most + 1)))
    assert price["credit_grants"]["maxItems"] == MAX_CREDIT_GRANTS
    assert price["entitlements"]["maxItems"] == MAX_ENTITLEMENTS
    assert schema_of("Product")["properties"]["entitlements"]["maxItems"] == MAX_ENTITLEMENTS


def test_a_usage_group_by_is_bounded_as_usage_bounds_it() -> None:
    from tollbooth.usage.service import PROPERTY_LIMIT

    for path in ("/api/v1/usage", "/mgt/v1/accounts/{account}/usage"):
        assert param(path, "get", "group_by")["schema"]["maxLength"] == PROPERTY_LIMIT


def test_a_receipt_email_has_the_syntax_every_other_email_has() -> None:
    """CreatePaymentIntent checks receipt_email as an e-mail (EMAIL_INVALID); the document took
    any string (make soak's schemathesis sent one as valid)."""
    receipt = body("/api/v1/payment/intents", "post")["properties"]["receipt_email"]
    customer = body("/mgt/v1/customers", "post")["properties"]["email"]
    assert receipt["pattern"].strip("^$?()") == customer["pattern"].strip("^$?()")
    assert matches(receipt["pattern"], "buyer@example.com")
    assert matches(receipt["pattern"], "")  # optional
    assert not matches(receipt["pattern"], "not an e-mail")


@pytest.mark.parametrize(
    "given",
    [
        {"items": [{"lookup_key": "pro"}], "line_items": [{"price": "price_1"}]},
        {"tier": "pro", "items": [{"lookup_key": "pro"}]},
        {"tier": "pro", "line_items": [{"price": "price_1"}]},
        {"tier": " "},
        {"items": [], "line_items": [{"price": "price_1"}]},
        {"tier": "", "items": [{"lookup_key": "pro"}]},
        {"items": None, "line_items": [{"price": "price_1"}]},
        {"tier": "pro"},
        {"line_items": [{"price": "price_1"}]},
    ],
)
def test_checkout_items_given_two_ways_are_invalid_as_the_server_refuses_them(
    given: dict[str, Any],
) -> None:
    """`items`, seed 003's `line_items` and seed 002's `tier` name what to buy one way at a
    time (not a oneof in the proto, so the document says it in `not`), and a tier given blank
    names nothing: the document calls a body invalid exactly when the server refuses it so."""
    from google.protobuf import json_format
    from jsonschema import Draft202012Validator

    from billing.v1 import checkout_pb2
    from tollbooth.checkout.servicer import _items

    schema = {**body("/api/v1/checkout/sessions", "post"), "components": DOC["components"]}
    document_takes = Draft202012Validator(schema).is_valid(given)
    request = json_format.ParseDict(given, checkout_pb2.CreateCheckoutSessionRequest())
    try:
        _items(request)
        server_takes = True
    except errors.DomainError:
        server_takes = False
    assert document_takes == server_takes


# Every request body field `currency`: its schema, whether a value is required there, and its
# length limit at the edge (`(billing.v1.max_length)`).
CURRENCY_FIELDS = {
    "Price (CreatePrice)": (DOC["components"]["schemas"]["Price"]["properties"]["currency"], True),
    "CreatePaymentIntent": (
        body("/api/v1/payment/intents", "post")["properties"]["currency"],
        False,
    ),
    "CreateCheckoutSession": (
        body("/api/v1/checkout/sessions", "post")["properties"]["currency"],
        False,
    ),
}


def _currency_taken(value: str, required: bool, limit: int) -> bool:
    """Whether the edge (length, control characters) and the domain's `clean_currency`
    (trimmed, any case, a code the provider holds) take `value`; an optional field takes a
    blank one as none given."""
    if len(value) > limit or text.control_problem(value, multiline=False) is not None:
        return False
    if not required and not value.strip():
        return True
    return _server_takes(clean_currency, value)


_PADDING = st.text(alphabet=" \u00a0\u3000\t", max_size=4)
CURRENCY_SAMPLES = st.one_of(
    st.builds(
        lambda left, code, upper, right: (
            left + "".join(c.upper() if u else c for c, u in zip(code, upper, strict=False)) + right
        ),
        _PADDING,
        st.sampled_from(["usd", "eur", "jpy", "kwd", "isk", "iqd", "uyi", "xau", "xyz", "us"]),
        st.lists(st.booleans(), min_size=3, max_size=3),
        _PADDING,
    ),
    st.text(alphabet="usdUSD \u200b\n", max_size=6),
)


@pytest.mark.parametrize("name", sorted(CURRENCY_FIELDS))
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=CURRENCY_SAMPLES)
def test_a_currency_is_what_the_server_takes_in_any_case_and_padded(name: str, value: str) -> None:
    """The document listed `usd` and `USD` only (an enum) while the server takes `Usd` and
    ` usd ` (trimmed, any case); its pattern and length now say what the server takes."""
    schema, required = CURRENCY_FIELDS[name]
    assert "enum" not in schema
    limit = schema["maxLength"]
    taken = matches(schema["pattern"], value) and len(value) <= limit
    assert taken == _currency_taken(value, required, limit), repr(value)


def test_the_currency_limit_is_each_fields_edge_limit() -> None:
    """10 characters for a payment intent's currency, as for checkout's (a padded code fits)."""
    limits = {name: schema["maxLength"] for name, (schema, _) in CURRENCY_FIELDS.items()}
    assert limits["CreatePaymentIntent"] == limits["CreateCheckoutSession"] == 10
