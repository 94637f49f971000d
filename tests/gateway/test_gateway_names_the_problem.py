"""The gateway names what is wrong: unknown JSON fields, wrong JSON types, refused origins."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import SERVICE_KEY

SERVICE = {"x-api-key": SERVICE_KEY}


def test_a_misspelt_grant_field_is_400_field_unknown_naming_it(stack):  # type: ignore[no-untyped-def]
    body = {"credit_type": "api", "amount": "5", "expiresAt": "2030-01-01T00:00:00Z"}
    resp = stack.request("POST", "/mgt/v1/accounts/acct_x/credits/grants", body, SERVICE)
    assert resp.status == 400
    assert resp.reason == "FIELD_UNKNOWN"
    info = resp.json()["details"][0]
    assert info["metadata"]["field"] == "expiresAt"
    assert "expiresAt" in resp.json()["message"]


def test_a_long_unknown_field_is_not_echoed_whole(stack):  # type: ignore[no-untyped-def]
    """README "Input rules": an error names the field without repeating a long input whole,
    in its message or in `metadata.field`."""
    body = {"credit_type": "api", "amount": "5", "request_id": "g-long", "x" * 900: 1}
    resp = stack.request("POST", "/mgt/v1/accounts/acct_x/credits/grants", body, SERVICE)
    assert resp.status == 400
    assert resp.reason == "FIELD_UNKNOWN"
    assert b"x" * 65 not in resp.body
    assert resp.json()["details"][0]["metadata"]["field"].startswith("x" * 10)


def test_an_unknown_nested_field_is_named_with_its_path(stack):  # type: ignore[no-untyped-def]
    body = {"principal_id": "p-nested", "scopes": [], "extra": {"deep": 1}}
    resp = stack.request("POST", "/mgt/v1/token/issue", body, SERVICE)
    assert resp.status == 400
    assert resp.reason == "FIELD_UNKNOWN"
    assert resp.json()["details"][0]["metadata"]["field"] == "extra"


def test_proto_and_json_names_and_free_form_keys_pass(stack):  # type: ignore[no-untyped-def]
    resp = stack.request("POST", "/mgt/v1/token/issue", {"principalId": "p-camel"}, SERVICE)
    assert resp.status == 200, resp.body
    resp = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-snake"}, SERVICE)
    assert resp.status == 200, resp.body


def test_unknown_field_refused_before_anything_is_written(stack):  # type: ignore[no-untyped-def]
    body = {"principal_id": "p-never", "sesion_ttl_sec": 60}
    assert stack.request("POST", "/mgt/v1/token/issue", body, SERVICE).reason == "FIELD_UNKNOWN"
    again = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-never"}, SERVICE)
    assert again.json()["account_created"] is True


def test_a_wrong_json_type_names_the_field_and_the_expected_type(stack):  # type: ignore[no-untyped-def]
    body = {"principal_id": "p-type", "session_ttl_sec": "month"}
    resp = stack.request("POST", "/mgt/v1/token/issue", body, SERVICE)
    assert resp.status == 400
    assert resp.reason == "MALFORMED_REQUEST"
    message = resp.json()["message"]
    assert "session_ttl_sec" in message and "TYPE_INT" in message


def test_not_json_at_all_is_still_malformed(stack):  # type: ignore[no-untyped-def]
    resp = stack.request("POST", "/mgt/v1/token/issue", b"{not json", SERVICE)
    assert resp.status == 400
    assert resp.reason == "MALFORMED_REQUEST"


@pytest.mark.parametrize("path", ["/api/v1/credits/balance", "/mgt/v1/token/issue"])
def test_a_preflight_from_an_origin_not_allowed_is_403_with_a_reason(stack, path):  # type: ignore[no-untyped-def]
    headers = {"origin": "http://evil.example", "access-control-request-method": "POST"}
    resp = stack.request("OPTIONS", path, None, headers)
    assert resp.status == 403
    assert resp.reason == "ORIGIN_NOT_ALLOWED"
    assert "origin" in resp.json()["message"]


def test_a_preflight_from_an_allowed_origin_still_passes(stack):  # type: ignore[no-untyped-def]
    headers = {"origin": "http://localhost:3000", "access-control-request-method": "GET"}
    resp = stack.request("OPTIONS", "/api/v1/credits/balance", None, headers)
    assert resp.status == 200
    assert resp.headers.get("access-control-allow-origin") == "http://localhost:3000"


def test_free_form_keys_under_struct_fields_are_not_checked(stack):  # type: ignore[no-untyped-def]
    body = {"event_name": "x", "account": "p", "properties": {"any.k,ey": {"thing": 1}}}
    resp = stack.request("POST", "/mgt/v1/events", body, SERVICE)
    assert resp.reason != "FIELD_UNKNOWN", resp.body


@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        (
            "/mgt/v1/token/issue",
            b'{"principal_id": "p-dup-a", "principal_id": "p-dup-b"}',
            "principal_id",
        ),
        (
            "/mgt/v1/accounts/acct_x/credits/grants",
            b'{"credit_type": "api", "amount": "1", "amount": "1000000"}',
            "amount",
        ),
        (
            "/mgt/v1/events:batch",
            b'{"events": [{"account": "p", "event_name": "x", "event_name": "y",'
            b' "timestamp": "2025-03-09T15:03:17Z"}]}',
            "events.event_name",
        ),
    ],
    ids=["top-level", "amount", "in-a-list"],
)
def test_a_key_written_twice_in_one_json_object_is_400_malformed_naming_it(  # type: ignore[no-untyped-def]
    stack, path, raw, field
):
    # Envoy's transcoder would keep the last silently (it refuses a repeated key only under a
    # google.protobuf.Struct, as a map key); which one the sender meant is unknown.
    resp = stack.request("POST", path, raw, SERVICE)
    assert resp.status == 400, resp.body
    assert resp.reason == "MALFORMED_REQUEST"
    assert resp.json()["details"][0]["metadata"]["field"] == field
    assert "twice" in resp.json()["message"]


def test_the_same_key_in_sibling_objects_is_no_duplicate(stack):  # type: ignore[no-untyped-def]
    body = (
        b'{"events": [{"unique_id": "dup-sib-1", "account": "nobody", "event_name": "x",'
        b' "timestamp": "2025-03-09T15:03:17Z"}, {"unique_id": "dup-sib-2", "account": "nobody",'
        b' "event_name": "x", "timestamp": "2025-03-09T15:03:17Z"}]}'
    )
    resp = stack.request("POST", "/mgt/v1/events:batch", body, SERVICE)
    assert resp.status == 200, resp.body
    assert [r["reason"] for r in resp.json()["results"]] == ["ACCOUNT_UNKNOWN"] * 2


def test_a_duplicate_key_changes_nothing(stack):  # type: ignore[no-untyped-def]
    raw = b'{"principal_id": "p-dup-never", "principal_id": "p-dup-never"}'
    assert stack.request("POST", "/mgt/v1/token/issue", raw, SERVICE).reason == "MALFORMED_REQUEST"
    again = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-dup-never"}, SERVICE)
    assert again.json()["account_created"] is True


# A key is named as Envoy's transcoder reads it: with its JSON escapes decoded.


def test_a_key_written_with_json_escapes_is_the_field_it_decodes_to(stack):  # type: ignore[no-untyped-def]
    raw = b'{"principal_\\u0069d": "p-escaped-key", "session\\u005Fttl_sec": 60}'
    resp = stack.request("POST", "/mgt/v1/token/issue", raw, SERVICE)
    assert resp.status == 200, resp.body
    again = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-escaped-key"}, SERVICE)
    assert again.json()["account_created"] is False


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"principal_id": "p-e1", "principal_\\u0069d": "p-e2"}', "principal_id"),
        (b'{"principal_id": "p-e1", "s": 1, "\\u0073": 2}', "s"),
        (b'{"principal_id": "p-e1", "\\ud83d\\ude00": 1, "\xf0\x9f\x98\x80": 2}', "\U0001f600"),
        (b'{"principal_id": "p-e1", "a/b": 1, "a\\/b": 2}', "a/b"),
    ],
    ids=["field", "unknown-key", "surrogate-pair", "solidus"],
)
def test_a_key_written_twice_once_with_escapes_is_400_malformed_naming_it(  # type: ignore[no-untyped-def]
    stack, raw, field
):
    resp = stack.request("POST", "/mgt/v1/token/issue", raw, SERVICE)
    assert resp.status == 400, resp.body
    assert resp.reason == "MALFORMED_REQUEST"
    assert resp.json()["details"][0]["metadata"]["field"] == field
    assert "twice" in resp.json()["message"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"principal_id": "p-u", "a\\"b": 1}', 'a"b'),
        (b'{"principal_id": "p-u", "a\\\\b\\n\\t": 1}', "a\\b\n\t"),
        (b'{"principal_id": "p-u", "\\u00e9t\\u00E9": 1}', "\u00e9t\u00e9"),
        (b'{"principal_id": "p-u", "x\\ud83d\\ude00": 1}', "x\U0001f600"),
    ],
    ids=["quote", "backslash-and-controls", "latin", "surrogate-pair"],
)
def test_an_unknown_escaped_key_is_named_decoded(stack, raw, field):  # type: ignore[no-untyped-def]
    resp = stack.request("POST", "/mgt/v1/token/issue", raw, SERVICE)
    assert resp.status == 400, resp.body
    assert resp.reason == "FIELD_UNKNOWN"
    assert resp.json()["details"][0]["metadata"]["field"] == field


def test_an_escaped_key_the_url_binds_is_refused_as_the_url_decides(stack):  # type: ignore[no-untyped-def]
    # The transcoder lets the lowerCamel spelling through (the URL's value wins).
    raw = b'{"product\\u0049d": "prod_other", "name": "X"}'
    resp = stack.request("PATCH", "/mgt/v1/catalog/products/prod_escaped", raw, SERVICE)
    assert resp.status == 400, resp.body
    assert resp.reason == "MALFORMED_REQUEST"
    assert resp.json()["details"][0]["metadata"]["field"] == "productId"


def test_a_key_with_an_escape_json_does_not_have_is_still_refused(stack):  # type: ignore[no-untyped-def]
    # The transcoder drops a key like this one silently: it is named as written.
    raw = b'{"principal\\x5fid": "p-bad-escape"}'
    resp = stack.request("POST", "/mgt/v1/token/issue", raw, SERVICE)
    assert resp.status == 400, resp.body
    assert resp.reason == "FIELD_UNKNOWN"
    assert resp.json()["details"][0]["metadata"]["field"] == "principal\\x5fid"
    # A \u without four hex digits, or a lone surrogate: the transcoder refuses the body.
    for raw in (b'{"principal\\u00": "p"}', b'{"principal_id": "p", "\\ud800": 1}'):
        resp = stack.request("POST", "/mgt/v1/token/issue", raw, SERVICE)
        assert resp.status == 400, resp.body
        assert resp.reason == "MALFORMED_REQUEST", resp.body


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        (
            "GET",
            "/mgt/v1/accounts/acct_q/credits/availability?type=api&required=1&required=1000",
            "required",
        ),
        ("GET", "/mgt/v1/accounts/acct_q/credits/availability?required=1&type=api&type=od", "type"),
        ("PATCH", "/mgt/v1/catalog/products/prod_q?request_id=a&request_id=b", "request_id"),
    ],
    ids=["required", "type", "request_id"],
)
def test_a_query_parameter_given_twice_is_400_malformed_naming_it(  # type: ignore[no-untyped-def]
    stack, method, path, field
):
    # Envoy's transcoder would keep the last one silently (`required=1000`, not 1).
    body = {"name": "Q"} if method == "PATCH" else None
    resp = stack.request(method, path, body, SERVICE)
    assert resp.status == 400, resp.body
    assert resp.reason == "MALFORMED_REQUEST"
    assert resp.json()["details"][0]["metadata"]["field"] == field
    assert "more than once" in resp.json()["message"]


def test_query_parameters_given_once_pass_the_gateway(stack):  # type: ignore[no-untyped-def]
    """The same request with each parameter once is not refused for its query (an unknown
    account is its own answer), and a client cannot refuse it by sending the header itself."""
    path = "/mgt/v1/accounts/acct_q/credits/availability?type=api&required=1"
    headers = {**SERVICE, "x-billing-query-repeats": "required"}
    resp = stack.request("GET", path, None, headers)
    assert resp.reason != "MALFORMED_REQUEST", resp.body
    assert resp.status == stack.request("GET", path, None, SERVICE).status


def test_a_json_body_on_a_delete_or_get_is_checked_like_any_other(stack):  # type: ignore[no-untyped-def]
    """The transcoder reads a JSON body on a binding without `body` into the request as well
    (`{"requestId": ...}` on a DELETE is used), so a key that request does not have is
    FIELD_UNKNOWN there too, never silently dropped while the DELETE goes ahead."""
    code = f"body_on_delete_{uuid.uuid4().hex[:8]}"
    made = stack.request(
        "POST",
        f"/mgt/v1/metrics?request_id={uuid.uuid4().hex}",
        {"code": code, "event_name": "e", "aggregation": "AGGREGATION_COUNT"},
        SERVICE,
    )
    assert made.status == 200, made.body
    path = f"/mgt/v1/metrics/{code}"
    resp = stack.request(
        "DELETE", f"{path}?request_id={uuid.uuid4().hex}", {"force": True}, SERVICE
    )
    assert (resp.status, resp.reason) == (400, "FIELD_UNKNOWN"), resp.body
    assert resp.json()["details"][0]["metadata"]["field"] == "force"
    assert stack.request("GET", path, None, SERVICE).status == 200  # nothing deleted
    resp = stack.request("GET", "/mgt/v1/metrics", {"pageSize": 1, "typo": 1}, SERVICE)
    assert (resp.status, resp.reason) == (400, "FIELD_UNKNOWN"), resp.body
    assert resp.json()["details"][0]["metadata"]["field"] == "typo"
    # A field the request has still passes in either spelling.
    resp = stack.request("DELETE", path, {"requestId": uuid.uuid4().hex}, SERVICE)
    assert resp.status == 200, resp.body
    assert stack.request("GET", path, None, SERVICE).status == 404


def test_a_delete_body_naming_what_the_url_binds_is_refused(stack):  # type: ignore[no-untyped-def]
    # The transcoder lets the lowerCamel spelling through on a DELETE too (the URL wins).
    made = stack.request(
        "POST",
        f"/mgt/v1/notifications/endpoints?request_id={uuid.uuid4().hex}",
        {"endpoint": {"url": "http://127.0.0.1:9/hooks"}},
        SERVICE,
    )
    assert made.status == 200, made.body
    endpoint = made.json()["endpoint"]["endpoint_id"]
    path = f"/mgt/v1/notifications/endpoints/{endpoint}"
    resp = stack.request(
        "DELETE", f"{path}?request_id={uuid.uuid4().hex}", {"endpointId": "nep_other"}, SERVICE
    )
    assert (resp.status, resp.reason) == (400, "MALFORMED_REQUEST"), resp.body
    assert resp.json()["details"][0]["metadata"]["field"] == "endpointId"
    assert stack.request("GET", path, None, SERVICE).status == 200


def _products(stack) -> list:  # type: ignore[no-untyped-def,type-arg]
    resp = stack.request("GET", "/mgt/v1/catalog/products?include_inactive=true", None, SERVICE)
    return list(resp.json()["products"])


@pytest.mark.parametrize(
    "path,body,field",
    [
        ("/mgt/v1/catalog/products", {"name": "Null", "entitlements": [None]}, "entitlements"),
        (
            "/mgt/v1/catalog/products",
            {"name": "Null", "entitlements": [{"feature": "a"}, None]},
            "entitlements",
        ),
        ("/mgt/v1/token/issue", {"principal_id": "p-null-item", "scopes": [None]}, "scopes"),
        (
            "/mgt/v1/token/issue",
            {"principal_id": "p-null-item", "scopes": ["checkout", None]},
            "scopes",
        ),
        # A null event of a batch is answered in its place instead
        # (test_a_null_event_of_a_batch_is_rejected_in_its_place).
    ],
)
def test_a_null_item_in_a_list_is_400_field_invalid_and_changes_nothing(  # type: ignore[no-untyped-def]
    stack, path, body, field
):
    """The transcoder drops a null list item silently (`"entitlements": [null]` made a product
    without entitlements); it is refused naming the list, before anything is written."""
    before = _products(stack)
    principal = f"p-null-item-{uuid.uuid4().hex[:8]}"
    if "principal_id" in body:
        body = {**body, "principal_id": principal}
    query = f"?request_id={uuid.uuid4().hex}" if "products" in path else ""
    resp = stack.request("POST", path + query, body, SERVICE)
    assert (resp.status, resp.reason) == (400, "FIELD_INVALID"), resp.body
    assert resp.json()["details"][0]["metadata"]["field"] == field
    assert "null" in resp.json()["message"]
    assert _products(stack) == before
    if path == "/mgt/v1/token/issue":
        again = stack.request("POST", path, {"principal_id": principal}, SERVICE)
        assert again.json()["account_created"] is True


def test_a_null_event_of_a_batch_is_rejected_in_its_place(stack):  # type: ignore[no-untyped-def]
    """A batch answers each event (tests/usage/test_batch_rest_per_event.py): a null item of
    `events` is that event REJECTED, not the batch refused. A null inside free-form
    properties first (a value, allowed) does not hide it."""
    body = {"events": [{"event_name": "e", "properties": {"a": [None]}}, None]}
    resp = stack.request("POST", "/mgt/v1/events:batch", body, SERVICE)
    assert resp.status == 200, resp.body
    got = [(r["status"], r["reason"]) for r in resp.json()["results"]]
    assert got[1] == ("EVENT_STATUS_REJECTED", "FIELD_INVALID")
    assert got[0][0] == "EVENT_STATUS_REJECTED"  # no account: the server's own refusal
    assert "null" in resp.json()["results"][1]["message"]


def test_a_null_inside_free_form_properties_is_still_a_json_null(stack):  # type: ignore[no-untyped-def]
    """Inside `properties` (a google.protobuf.Struct) a null list item is a value, not a
    dropped one: only the contract's own lists refuse it."""
    acct = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-null-props"}, SERVICE)
    event = {
        "event_name": "null_props",
        "timestamp": "2026-03-01T00:00:00Z",
        "account": acct.json()["billing_account_id"],
        "properties": {"list": [None, 1], "nested": {"deep": [None]}},
    }
    resp = stack.request("POST", "/mgt/v1/events", event, SERVICE)
    assert resp.status == 200, resp.body


def test_nulls_in_more_lists_than_the_gateway_names_are_refused_whole(stack):  # type: ignore[no-untyped-def]
    """Every array holding a null is named for the check above; a body holding nulls in more
    distinct arrays than the header carries is refused (400) rather than checked in part."""
    properties = {f"k{n:05d}": [None] for n in range(1200)}
    event = {"event_name": "e", "properties": properties}
    resp = stack.request("POST", "/mgt/v1/events:batch", {"events": [event, None]}, SERVICE)
    assert (resp.status, resp.reason) == (400, "MALFORMED_REQUEST"), resp.body
    assert "null" in resp.json()["message"]


# One field named in both its spellings (proto name and JSON name) in one object is a key
# written twice too: the transcoder reads both as the field and keeps the last, silently.


@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        (
            "/mgt/v1/accounts/p-twice-spelt/credits/grants",
            b'{"creditType": "units", "credit_type": "bonus", "amount": "5",'
            b' "requestId": "twice-spelt-1"}',
            "credit_type",
        ),
        (
            "/mgt/v1/accounts/p-twice-spelt/credits/grants",
            b'{"credit_type": "units", "amount": "5", "requestId": "twice-spelt-2",'
            b' "request_id": "twice-spelt-3"}',
            "request_id",
        ),
        (
            "/mgt/v1/events",
            b'{"uniqueId": "ts-1", "account": "p-twice-spelt", "eventName": "x",'
            b' "timestamp": "2025-03-09T15:03:17Z", "event_time": "2025-01-01T00:00:00Z"}',
            "event_time",
        ),
        (
            "/mgt/v1/events:batch",
            b'{"events": [{"uniqueId": "ts-2", "unique_id": "ts-3", "account": "p-twice-spelt",'
            b' "eventName": "x", "timestamp": "2025-03-09T15:03:17Z"}]}',
            "events.unique_id",
        ),
    ],
    ids=["credit-type", "request-id", "timestamp-and-event-time", "in-a-list"],
)
def test_a_field_written_in_both_spellings_is_400_malformed_naming_it(  # type: ignore[no-untyped-def]
    stack, path, raw, field
):
    stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-twice-spelt"}, SERVICE)
    resp = stack.request("POST", path, raw, SERVICE)
    assert resp.status == 400, resp.body
    assert resp.reason == "MALFORMED_REQUEST"
    assert resp.json()["details"][0]["metadata"]["field"] == field
    assert "twice" in resp.json()["message"]
    grants = stack.request("GET", "/mgt/v1/accounts/p-twice-spelt/credits/grants", None, SERVICE)
    assert grants.json().get("grants", []) == []  # nothing was granted


def test_both_spellings_in_sibling_objects_or_free_form_keys_pass(stack):  # type: ignore[no-untyped-def]
    stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-spelt-ok"}, SERVICE)
    body = (
        b'{"events": [{"uniqueId": "spelt-ok-1", "account": "p-spelt-ok", "eventName": "x",'
        b' "timestamp": "2025-03-09T15:03:17Z", "properties": {"user_id": 1, "userId": 2}},'
        b' {"unique_id": "spelt-ok-2", "account": "p-spelt-ok", "event_name": "x",'
        b' "event_time": "2025-03-09T15:03:17Z"}]}'
    )
    resp = stack.request("POST", "/mgt/v1/events:batch", body, SERVICE)
    assert resp.status == 200, resp.body
    assert [r["status"] for r in resp.json()["results"]] == ["EVENT_STATUS_ACCEPTED"] * 2
    account = b'{"name": "Spelt", "alias": "spelt-ok", "metadata": {"crm_id": "1", "crmId": "2"}}'
    resp = stack.request("POST", "/mgt/v1/accounts", account, SERVICE)
    assert resp.status == 200, resp.body


def test_the_gateways_json_name_aliases_are_the_contracts() -> None:
    """gateway/json_fields.lua spells a key as protobuf's lowerCamel JSON name; the fields whose
    JSON name is another word are listed in its ALIASES, which must match the contract."""
    import re

    from tollbooth.gateway import LUA
    from tollbooth.rpc.rules import contract_services

    def camel(name: str) -> str:
        return re.sub(r"_+(.?)", lambda m: m.group(1).upper(), name)

    expected: dict[str, str] = {}
    seen: set[str] = set()

    def walk(desc) -> None:  # type: ignore[no-untyped-def]
        if desc.full_name in seen:
            return
        seen.add(desc.full_name)
        for field in desc.fields:
            if field.json_name != camel(field.name):
                expected[field.json_name] = camel(field.name)
            if field.message_type is not None:
                walk(field.message_type)

    for service in contract_services():
        for method in service.methods:
            walk(method.input_type)
    table = re.search(r"local ALIASES = \{([^}]*)\}", LUA.read_text())
    assert table is not None
    found = dict(re.findall(r'(\w+) = "(\w+)"', table.group(1)))
    assert found == expected


# A list field takes a JSON array of values: the transcoder would take a lone value or an
# object as a one-item list, and flatten a list of lists, silently (README "Input rules").


@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        ("/mgt/v1/token/issue", b'{"principal_id": "p-lone", "scopes": "checkout"}', "scopes"),
        (
            "/mgt/v1/token/issue",
            b'{"principal_id": "p-lone", "scopes": [["checkout"], "portal"]}',
            "scopes",
        ),
        (
            "/mgt/v1/events:batch",
            b'{"events": {"uniqueId": "lone-1", "account": "p-lone", "eventName": "x",'
            b' "timestamp": "2025-03-09T15:03:17Z"}}',
            "events",
        ),
        # A list inside `events` is one event that is not an object: answered REJECTED in its
        # place (tests/usage/test_batch_rest_per_event.py), the batch goes on.
    ],
    ids=["lone-string", "list-in-list", "object-for-list"],
)
def test_a_list_field_given_no_array_of_values_is_400_malformed_naming_it(  # type: ignore[no-untyped-def]
    stack, path, raw, field
):
    resp = stack.request("POST", path, raw, SERVICE)
    assert resp.status == 400, resp.body
    assert resp.reason == "MALFORMED_REQUEST"
    assert resp.json()["details"][0]["metadata"]["field"] == field
    assert "list" in resp.json()["message"]


def test_lists_null_lists_and_free_form_shapes_pass(stack):  # type: ignore[no-untyped-def]
    resp = stack.request(
        "POST", "/mgt/v1/token/issue", {"principal_id": "p-lists", "scopes": None}, SERVICE
    )
    assert resp.status == 200, resp.body
    resp = stack.request(
        "POST", "/mgt/v1/token/issue", {"principal_id": "p-lists", "scopes": ["portal"]}, SERVICE
    )
    assert resp.status == 200, resp.body
    body = {
        "events": [
            {
                "uniqueId": "lists-1",
                "account": "p-lists",
                "eventName": "x",
                "timestamp": "2025-03-09T15:03:17Z",
                "properties": {"tags": [["a"], "b"], "one": {"k": [1, [2]]}},
            }
        ]
    }
    resp = stack.request("POST", "/mgt/v1/events:batch", body, SERVICE)
    assert resp.status == 200, resp.body
    assert resp.json()["results"][0]["status"] == "EVENT_STATUS_ACCEPTED"


# Envoy's transcoder reads lenient JSON (single quotes, bare keys, trailing commas, any
# depth) that the gateway's checks could not read: such a body would pass none of them (a
# misspelt field dropped, a key written twice kept last), so the gateway refuses it.


@pytest.mark.parametrize(
    "raw",
    [
        b"{'credit_type': 'units', 'amount': '5', 'expiresAt': '2030-01-01T00:00:00Z'}",
        b'{credit_type: "units", amount: "5", expiresAt: "2030-01-01T00:00:00Z"}',
        b'{"credit_type": "units", "amount": "5", "amount": "500",}',
        b'{"credit_type": "units", "amount": "5", "expiresAt": "2030-01-01T00:00:00Z",}',
        b'{"credit_type": "units", "amount": "5", "amount": "500", "z": '
        + b"[" * 70
        + b"]" * 70
        + b"}",
        b'{"credit_type": "units", "amount": "5"} {"amount": "500"}',
    ],
    ids=[
        "single-quotes",
        "bare-keys",
        "trailing-comma-dup",
        "trailing-comma-unknown",
        "deep",
        "two",
    ],
)
def test_a_body_that_is_not_strict_json_is_400_and_grants_nothing(stack, raw):  # type: ignore[no-untyped-def]
    stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-lenient"}, SERVICE)
    path = "/mgt/v1/accounts/p-lenient/credits/grants"
    resp = stack.request("POST", path, raw, SERVICE)
    assert resp.status == 400, resp.body
    assert resp.reason == "MALFORMED_REQUEST"
    grants = stack.request("GET", "/mgt/v1/accounts/p-lenient/credits/grants", None, SERVICE)
    assert grants.json().get("grants", []) == []


@pytest.mark.parametrize(
    ("query", "field"),
    [("page_size=1&pageSize=3", "page_size"), ("alias_prefix=a&aliasPrefix=b", "alias_prefix")],
)
def test_a_query_naming_one_field_under_both_names_is_400_naming_it(stack, query, field):  # type: ignore[no-untyped-def]
    resp = stack.request("GET", f"/mgt/v1/accounts?{query}", None, SERVICE)
    assert resp.status == 400, resp.body
    assert resp.reason == "MALFORMED_REQUEST"
    assert resp.json()["details"][0]["metadata"]["field"] == field


def test_a_query_field_the_body_names_in_another_spelling_is_400(stack):  # type: ignore[no-untyped-def]
    stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-query-body"}, SERVICE)
    body = {"creditType": "units", "amount": "1", "requestId": "query-body-1"}
    path = "/mgt/v1/accounts/p-query-body/credits/grants?credit_type=bonus"
    resp = stack.request("POST", path, body, SERVICE)
    assert resp.status == 400, resp.body
    assert resp.reason == "MALFORMED_REQUEST"
    assert resp.json()["details"][0]["metadata"]["field"] == "credit_type"
    grants = stack.request("GET", "/mgt/v1/accounts/p-query-body/credits/grants", None, SERVICE)
    assert grants.json().get("grants", []) == []


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("POST", "/mgt/v1/catalog/products", {"name": "Null meta", "metadata": {"tier": None}}),
        ("POST", "/mgt/v1/accounts", {"name": "Null meta", "metadata": {"a": "1", "tier": None}}),
    ],
)
def test_a_null_map_value_is_400_field_invalid_and_changes_nothing(stack, method, path, body):  # type: ignore[no-untyped-def]
    """The transcoder stored `"metadata": {"tier": null}` as "" silently (a value nobody
    sent); it is refused naming the key, and nothing is created."""
    before = _products(stack)
    resp = stack.request(method, f"{path}?request_id={uuid.uuid4().hex}", body, SERVICE)
    assert (resp.status, resp.reason) == (400, "FIELD_INVALID"), resp.body
    assert resp.json()["details"][0]["metadata"]["field"] == "metadata['tier']"
    assert "null" in resp.json()["message"]
    assert _products(stack) == before


def test_a_null_map_value_on_an_update_changes_nothing(stack):  # type: ignore[no-untyped-def]
    made = stack.request(
        "POST",
        f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}",
        {"name": "Null meta", "metadata": {"tier": "gold"}},
        SERVICE,
    )
    assert made.status == 200, made.body
    url = f"/mgt/v1/catalog/products/{made.json()['product_id']}"
    resp = stack.request(
        "PATCH", f"{url}?request_id={uuid.uuid4().hex}", {"metadata": {"tier": None}}, SERVICE
    )
    assert (resp.status, resp.reason) == (400, "FIELD_INVALID"), resp.body
    assert stack.request("GET", url, None, SERVICE).json()["metadata"] == {"tier": "gold"}


def test_a_null_map_itself_and_nulls_in_free_form_properties_still_pass(stack):  # type: ignore[no-untyped-def]
    """The control: `"metadata": null` is an empty map (proto3 JSON), and `properties` (a
    google.protobuf.Struct) holds nulls as values."""
    resp = stack.request(
        "POST",
        f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}",
        {"name": "Null map", "metadata": None},
        SERVICE,
    )
    assert resp.status == 200, resp.body
    acct = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-null-map"}, SERVICE)
    event = {
        "event_name": "null_props",
        "timestamp": "2026-03-01T00:00:00Z",
        "account": acct.json()["billing_account_id"],
        "properties": {"tier": None},
    }
    assert stack.request("POST", "/mgt/v1/events", event, SERVICE).status == 200


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/mgt/v1/catalog/products?bogus=1"),
        ("GET", "/mgt/v1/catalog/products?include_inactive=true&bogus.deep=1"),
        ("POST", "/mgt/v1/catalog/products?request_id=q-unknown&bogus=1"),
    ],
)
def test_an_unknown_query_parameter_is_400_field_unknown_like_an_unknown_body_key(  # type: ignore[no-untyped-def]
    stack, method, path
):
    """The transcoder refused `?bogus=1` itself, as MALFORMED_REQUEST naming no field, where an
    unknown JSON body key is FIELD_UNKNOWN naming it: both are FIELD_UNKNOWN now."""
    before = _products(stack)
    body = {"name": "Unknown query"} if method == "POST" else None
    resp = stack.request(method, path, body, SERVICE)
    assert (resp.status, resp.reason) == (400, "FIELD_UNKNOWN"), resp.body
    assert resp.json()["details"][0]["metadata"]["field"].startswith("bogus")
    assert _products(stack) == before
    key = stack.request("POST", "/mgt/v1/accounts/acct_x/credits/grants", {"amout": "1"}, SERVICE)
    assert (key.status, key.reason) == (400, "FIELD_UNKNOWN"), key.body


def test_an_unknown_key_inside_a_timestamp_object_is_400_field_unknown(stack):  # type: ignore[no-untyped-def]
    """The transcoder reads a Timestamp written as its message (`{"seconds": 5}`) and ignored
    any other key in it (`{"seconds": 0, "bogus": 1}` was taken): such a key is refused as any
    unknown body key is."""
    body = {"credit_type": "units", "amount": "1", "expire_time": {"seconds": 1, "bogus": 2}}
    resp = stack.request("POST", "/mgt/v1/accounts/acct_x/credits/grants", body, SERVICE)
    assert (resp.status, resp.reason) == (400, "FIELD_UNKNOWN"), resp.body
    assert resp.json()["details"][0]["metadata"]["field"] == "expire_time.bogus"


@pytest.mark.parametrize(
    "query",
    ["update_mask.bogus=name", "updateMask.x=name", "environment.x=live", "limit.x=1", "limit.=1"],
)
def test_a_query_parameter_below_a_field_that_has_no_such_part_is_400_field_unknown(  # type: ignore[no-untyped-def]
    stack, query
):
    """`?update_mask.bogus=name` or `?limit.x=1` names a part of a field that has none: the
    transcoder (which passes unknown parameters on) ignored it, so a PATCH whose mask was
    spelt so updated every field the body held, and the list ignored its limit. Each is
    refused as an unknown parameter is; `update_mask.paths` (a FieldMask's own field) and a
    Timestamp's `seconds` still bind."""
    created = stack.request(
        "POST",
        f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}",
        {"name": "Deep query", "description": "kept"},
        SERVICE,
    )
    assert created.status == 200, created.body
    product = created.json()["product_id"]
    path = f"/mgt/v1/catalog/products/{product}?request_id={uuid.uuid4().hex}&{query}"
    body = {"name": "Renamed", "description": "overwritten"}
    resp = stack.request("PATCH", path, body, SERVICE)
    if query.split(".")[0] in ("environment", "limit"):
        resp = stack.request("GET", f"/mgt/v1/customers?{query}", None, SERVICE)
    assert (resp.status, resp.reason) == (400, "FIELD_UNKNOWN"), resp.body
    assert resp.json()["details"][0]["metadata"]["field"] == query.split("=")[0]
    got = stack.request("GET", f"/mgt/v1/catalog/products/{product}", None, SERVICE).json()
    assert (got["name"], got["description"]) == ("Deep query", "kept")
    masked = stack.request(
        "PATCH",
        f"/mgt/v1/catalog/products/{product}?request_id={uuid.uuid4().hex}&update_mask.paths=name",
        body,
        SERVICE,
    )
    assert masked.status == 200, masked.body
    assert (masked.json()["name"], masked.json()["description"]) == ("Renamed", "kept")


def test_an_encoded_dot_in_a_query_name_is_no_separator(stack):  # type: ignore[no-untyped-def]
    """The transcoder splits a parameter's name at its dots before decoding it, so
    `update_mask%2Epaths` named no field and was ignored (the PATCH updated every field of its
    body) while the gateway told the server `update_mask.paths`: it is an unknown parameter."""
    created = stack.request(
        "POST",
        f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}",
        {"name": "Encoded dot", "description": "kept"},
        SERVICE,
    )
    assert created.status == 200, created.body
    product = created.json()["product_id"]
    resp = stack.request(
        "PATCH",
        f"/mgt/v1/catalog/products/{product}?request_id={uuid.uuid4().hex}&update_mask%2Epaths=name",
        {"name": "Renamed", "description": "overwritten"},
        SERVICE,
    )
    assert (resp.status, resp.reason) == (400, "FIELD_UNKNOWN"), resp.body
    assert resp.json()["details"][0]["metadata"]["field"] == "update_mask.paths"
    got = stack.request("GET", f"/mgt/v1/catalog/products/{product}", None, SERVICE).json()
    assert (got["name"], got["description"]) == ("Encoded dot", "kept")
