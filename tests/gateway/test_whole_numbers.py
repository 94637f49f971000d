"""A JSON number in an integer field must be a whole number as written. Envoy's transcoder
reads a JSON number as a binary double before it takes the integer, so a literal that is not
whole but rounds to one in a double (`899.99999999999999999` is 900.0) was taken rounded,
silently: money and counts must be exact (README "Input rules"). A whole number written with
a fraction or an exponent (`900.0`, `9e2`) is the same number and passes, as the transcoder
reads it; free-form `properties` keep any number."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import SERVICE_KEY

SERVICE = {"x-api-key": SERVICE_KEY}


def _field(resp) -> str:  # type: ignore[no-untyped-def]
    return str(resp.json()["details"][0]["metadata"].get("field", ""))


@pytest.mark.parametrize(
    "literal", ["899.99999999999999999", "900.00000000000000001", "9.0000000000000000001e2"]
)
def test_a_number_that_is_not_whole_is_400_in_an_integer_field_not_rounded(stack, literal):  # type: ignore[no-untyped-def]
    principal = f"p-frac-{uuid.uuid4().hex[:8]}"
    raw = f'{{"principal_id": "{principal}", "session_ttl_sec": {literal}}}'.encode()
    resp = stack.request("POST", "/mgt/v1/token/issue", raw, SERVICE)
    assert resp.status == 400, resp.body
    assert resp.reason == "MALFORMED_REQUEST"
    assert _field(resp) == "session_ttl_sec"
    # Nothing was made: the principal's account is created by the next, good call.
    again = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": principal}, SERVICE)
    assert again.json()["account_created"] is True


@pytest.mark.parametrize("literal", ["900.0", "9e2", "9.00E+2", "90000e-2"])
def test_a_whole_number_written_with_a_fraction_or_exponent_passes(stack, literal):  # type: ignore[no-untyped-def]
    principal = f"p-whole-{uuid.uuid4().hex[:8]}"
    raw = f'{{"principal_id": "{principal}", "session_ttl_sec": {literal}}}'.encode()
    resp = stack.request("POST", "/mgt/v1/token/issue", raw, SERVICE)
    assert resp.status == 200, resp.body


def test_a_number_that_is_not_whole_inside_a_list_item_is_named_by_its_path(stack):  # type: ignore[no-untyped-def]
    product = stack.request(
        "POST",
        f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}",
        {"name": "Whole numbers"},
        SERVICE,
    ).json()["product_id"]
    head = {
        "product_id": product,
        "currency": "usd",
        "unit_amount": 500,
        "type": "PRICE_TYPE_ONE_TIME",
        "lookup_key": f"frac-{uuid.uuid4().hex[:8]}",
    }
    grant = (
        '{"credit_type": "units", "amount": "5", "expires_after_seconds": 3599.99999999999999999}'
    )
    raw = (json.dumps(head)[:-1] + f', "credit_grants": [{grant}]}}').encode()
    resp = stack.request(
        "POST", f"/mgt/v1/catalog/prices?request_id={uuid.uuid4().hex}", raw, SERVICE
    )
    assert resp.status == 400, resp.body
    assert resp.reason == "MALFORMED_REQUEST"
    assert _field(resp) == "credit_grants.expires_after_seconds"
    listed = stack.request("GET", f"/mgt/v1/catalog/prices?product_id={product}", None, SERVICE)
    assert listed.json().get("prices", []) == []


def test_a_fraction_in_free_form_properties_is_a_value_like_any_other(stack):  # type: ignore[no-untyped-def]
    acct = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-frac-props"}, SERVICE)
    head = {
        "event_name": "frac_props",
        "timestamp": "2026-03-01T00:00:00Z",
        "account": acct.json()["billing_account_id"],
    }
    props = '{"tokens": 1.5, "list": [0.25, 2.9999999999999999]}'
    raw = (json.dumps(head)[:-1] + f', "properties": {props}}}').encode()
    resp = stack.request("POST", "/mgt/v1/events", raw, SERVICE)
    assert resp.status == 200, resp.body


def test_fractions_in_more_keys_than_the_gateway_names_are_refused_whole(stack):  # type: ignore[no-untyped-def]
    """Every key holding a number that is not whole is named for the check above; a body with
    more distinct such keys than the header carries is refused (400) rather than checked in
    part (an integer field's rounded number could hide behind them), and fewer pass."""
    acct = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-frac-many"}, SERVICE)
    account = acct.json()["billing_account_id"]

    def batch(keys: int) -> bytes:
        props = ", ".join(f'"k{n:05d}": 0.5' for n in range(keys))
        head = {"event_name": "frac_many", "timestamp": "2026-03-01T00:00:00Z", "account": account}
        return (
            '{"events": [' + json.dumps(head)[:-1] + f', "properties": {{{props}}}}}]}}'
        ).encode()

    resp = stack.request("POST", "/mgt/v1/events:batch", batch(1200), SERVICE)
    assert (resp.status, resp.reason) == (400, "MALFORMED_REQUEST"), resp.body
    assert "whole" in resp.json()["message"]
    resp = stack.request("POST", "/mgt/v1/events:batch", batch(100), SERVICE)
    assert resp.status == 200, resp.body


@pytest.mark.parametrize("literal", ["900.", "9.e2", "900.e0"])
def test_a_number_that_is_not_strict_json_is_400_and_makes_nothing(stack, literal):  # type: ignore[no-untyped-def]
    """RFC 8259 writes a digit after the point; Envoy's transcoder also took `900.` as 900.
    The gateway refuses a body that is not strict JSON (README "Input rules"), numbers too."""
    principal = f"p-loose-{uuid.uuid4().hex[:8]}"
    raw = f'{{"principal_id": "{principal}", "session_ttl_sec": {literal}}}'.encode()
    resp = stack.request("POST", "/mgt/v1/token/issue", raw, SERVICE)
    assert (resp.status, resp.reason) == (400, "MALFORMED_REQUEST"), resp.body
    assert "strict JSON" in resp.json()["message"]
    again = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": principal}, SERVICE)
    assert again.json()["account_created"] is True
