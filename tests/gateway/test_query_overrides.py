"""A query parameter never overrides what the URL path (or the binding's body) binds.

Envoy's transcoder binds query parameters to request fields after the path's, so
`POST /mgt/v1/accounts/{A}/credits/grants?account=B` granted to B, and a read of A's balance
with `?account=B` answered B's. Every such parameter is refused (400 MALFORMED_REQUEST naming
it) and nothing changes on either account.
"""

from __future__ import annotations

import re
import uuid

import pytest

from tests.conftest import SERVICE_KEY

SERVICE = {"x-api-key": SERVICE_KEY}


def account(stack) -> str:  # type: ignore[no-untyped-def]
    principal = f"query-override-{uuid.uuid4().hex[:8]}"
    issued = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": principal}, SERVICE)
    assert issued.status == 200, issued.body
    return str(issued.json()["billing_account_id"])


def state(stack, acct: str) -> tuple[object, object]:  # type: ignore[no-untyped-def]
    balance = stack.request(
        "GET", f"/mgt/v1/accounts/{acct}/credits/balance?type=units", None, SERVICE
    )
    ledger = stack.request("GET", f"/mgt/v1/accounts/{acct}/credits/ledger", None, SERVICE)
    assert balance.status == 200 and ledger.status == 200, (balance.body, ledger.body)
    return balance.json()["balance"], ledger.json()


def refused(resp, name: str) -> None:  # type: ignore[no-untyped-def]
    assert resp.status == 400, resp.body
    assert resp.reason == "MALFORMED_REQUEST", resp.body
    assert name in resp.json()["message"], resp.body


@pytest.mark.parametrize("name", ["account", "%61ccount"])
def test_a_grant_naming_another_account_in_the_query_is_refused_and_changes_nothing(  # type: ignore[no-untyped-def]
    stack, name
):
    a, b = account(stack), account(stack)
    seeded = stack.request(
        "POST",
        f"/mgt/v1/accounts/{b}/credits/grants",
        {"credit_type": "units", "amount": "5", "reason": "seed", "request_id": uuid.uuid4().hex},
        SERVICE,
    )
    assert seeded.status == 200, seeded.body
    before = state(stack, a), state(stack, b)
    body = {"credit_type": "units", "amount": "7", "reason": "x", "request_id": uuid.uuid4().hex}
    for path in (f"/mgt/v1/accounts/{a}/credits/grants", f"/mgt/v1/accounts/{a}/credits/debits"):
        resp = stack.request("POST", f"{path}?{name}={b}", body, SERVICE)
        refused(resp, "account")
    assert (state(stack, a), state(stack, b)) == before


def test_a_read_naming_another_account_in_the_query_is_refused(stack):  # type: ignore[no-untyped-def]
    a, b = account(stack), account(stack)
    resp = stack.request(
        "GET", f"/mgt/v1/accounts/{a}/credits/balance?type=units&account={b}", None, SERVICE
    )
    refused(resp, "account")
    # The browser surface binds no account in its path: a service key names it in the query.
    api = stack.request("GET", f"/api/v1/credits/balance?type=units&account={b}", None, SERVICE)
    assert api.status == 200, api.body
    assert api.json()["billing_account_id"] == b


def _bound_by_path() -> list[tuple[str, str, str, str]]:
    """(rpc, HTTP method, URL, query name) for every field a REST binding's URL binds (in its
    proto and JSON spelling) and, for a binding whose body is one field, that field's subfields."""
    from google.api import annotations_pb2

    from tollbooth.rpc.rules import contract_services

    found = []
    for service in contract_services():
        for method in service.methods:
            if not method.GetOptions().HasExtension(annotations_pb2.http):
                continue  # gRPC only
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            for binding in [rule, *rule.additional_bindings]:
                verb = binding.WhichOneof("pattern")
                template = getattr(binding, verb)
                url = re.sub(r"\{[^}]*\}", "x_url_1", template)
                for var in re.findall(r"\{([^}=]*)", template):
                    desc = method.input_type
                    parts = var.split(".")
                    for part in parts[:-1]:
                        desc = desc.fields_by_name[part].message_type
                    field = desc.fields_by_name[parts[-1]]
                    for name in dict.fromkeys([field.name, field.json_name]):
                        found.append(
                            (method.name, verb.upper(), url, ".".join([*parts[:-1], name]))
                        )
                if binding.body and binding.body != "*":
                    body = method.input_type.fields_by_name[binding.body].message_type
                    inner = next(f for f in body.fields if f.type == f.TYPE_STRING)
                    found.append((method.name, verb.upper(), url, f"{binding.body}.{inner.name}"))
    return found


BOUND = _bound_by_path()


def test_every_rpc_with_a_path_variable_is_listed() -> None:
    names = {(rpc, name) for rpc, _, _, name in BOUND}
    for expected in [
        ("GrantCredits", "account"),
        ("GetBalance", "account"),
        ("GetCheckoutSession", "checkoutSessionId"),
        ("UpdateAccount", "account.id"),
        ("UpdateProduct", "product.productId"),
        ("GetUsage", "account"),
    ]:
        assert expected in names, expected
    assert len({rpc for rpc, *_ in BOUND}) >= 40


@pytest.mark.parametrize("rpc,verb,url,name", BOUND, ids=[f"{r}-{n}" for r, _, _, n in BOUND])
def test_a_query_parameter_naming_what_the_path_binds_is_refused(  # type: ignore[no-untyped-def]
    stack, rpc, verb, url, name
):
    sep = "&" if "?" in url else "?"
    body = {} if verb in ("POST", "PATCH", "PUT") else None
    resp = stack.request(verb, f"{url}{sep}{name}=x_query_2", body, SERVICE)
    refused(resp, name)


@pytest.mark.parametrize("value", ["yes", "t", "y", "1", "TRUE", "True", "no", "f", "0"])
def test_a_query_boolean_is_true_or_false_only(stack, value):  # type: ignore[no-untyped-def]
    """The transcoder read `?include_inactive=yes` (or `t`, `1`, `TRUE`) as true, where the
    document says a boolean is `true` or `false`: refused naming the field."""
    resp = stack.request("GET", f"/mgt/v1/catalog/products?include_inactive={value}", None, SERVICE)
    assert (resp.status, resp.reason) == (400, "FIELD_INVALID"), resp.body
    assert resp.json()["details"][0]["metadata"]["field"] == "include_inactive"


def test_true_false_and_numbers_that_look_boolean_still_pass(stack):  # type: ignore[no-untyped-def]
    """The control: `true` and `false` are booleans, and `1` or `0` in a number field is a
    number."""
    for query in ("include_inactive=true", "include_inactive=false", "page_size=1", "page_size=0"):
        resp = stack.request("GET", f"/mgt/v1/catalog/products?{query}", None, SERVICE)
        assert resp.status == 200, (query, resp.body)


def test_a_plus_in_a_query_value_is_a_space_as_form_encoders_write_it(stack):  # type: ignore[no-untyped-def]
    """`?type=+units+` (Python's urlencode and browsers' URLSearchParams write a space as "+")
    reached the server as "+units+" and was refused as a credit type; a literal plus is %2B."""
    acct = account(stack)
    spaced = stack.request(
        "GET", f"/mgt/v1/accounts/{acct}/credits/balance?type=+units+", None, SERVICE
    )
    assert spaced.status == 200, spaced.body
    assert spaced.json()["credit_type"] == "units"
    plus = stack.request(
        "GET", f"/mgt/v1/accounts/{acct}/credits/balance?type=a%2Bb", None, SERVICE
    )
    assert (plus.status, plus.reason) == (400, "INVALID_ARGUMENT"), plus.body
