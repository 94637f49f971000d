"""Small defects at the REST edge, each answered with its real cause, through a real Envoy.

- A query parameter with no name (`?=1`) or a name without `=` (`?include_inactive`) passed
  silently (the transcoder ignores both): each is 400 MALFORMED_REQUEST naming it, and a bare
  boolean is told to write `=true`.
- An unknown HTTP method (`FOO`) and a control byte in a header were answered "the request does
  not parse as this RPC's JSON request": the method is 405 with `Allow`, as a known method the
  path does not take is, and the control byte names itself.
- A raw `+` in a query e-mail (`?customerEmail=user+tag@example.com`) is a space once decoded:
  the EMAIL_INVALID message says to send `+` as `%2B`.
- `?environment=` takes `test` or `live` as the document lists them (lowercase, as written):
  `TEST` or ` test` was read as `test`.
"""

from __future__ import annotations

import http.client
import socket
import uuid

import pytest

from tests.conftest import SERVICE_KEY
from tests.devstack import Response, Stack

pytestmark = pytest.mark.envoy

SERVICE = {"x-api-key": SERVICE_KEY}
PRODUCTS = "/mgt/v1/catalog/products"


def _error(resp: Response) -> tuple[int, str | None, str, dict[str, str]]:
    body = resp.json()
    metadata: dict[str, str] = {}
    for detail in body.get("details", []):
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            metadata = detail.get("metadata", {})
    return resp.status, resp.reason, body.get("message", ""), metadata


def _count(stack: Stack) -> int:
    resp = stack.request("GET", f"{PRODUCTS}?include_inactive=true", None, SERVICE)
    assert resp.status == 200, resp.body
    return len(resp.json()["products"])


# -- 1. A query parameter without a name, or without `=` ------------------------------------


@pytest.mark.parametrize("query", ["=1", "=", "page_size=5&=x", "%3D1=2&=1"])
def test_a_query_parameter_with_no_name_is_400_malformed_request(stack, query):  # type: ignore[no-untyped-def]
    if query.startswith("%3D"):
        # The control: a name that is an encoded "=" has a name ("="), which names no field.
        status, reason, message, _ = _error(
            stack.request("GET", f"{PRODUCTS}?{query}", None, SERVICE)
        )
        assert (status, reason) == (400, "FIELD_UNKNOWN"), message
        return
    status, reason, message, _ = _error(stack.request("GET", f"{PRODUCTS}?{query}", None, SERVICE))
    assert (status, reason) == (400, "MALFORMED_REQUEST"), message
    assert "no name" in message, message
    assert "JSON request" not in message, message


@pytest.mark.parametrize(
    ("url", "name", "hint"),
    [
        (f"{PRODUCTS}?include_inactive", "include_inactive", "include_inactive=true"),
        (f"{PRODUCTS}?page_size=5&include_inactive", "include_inactive", "include_inactive=true"),
        (f"{PRODUCTS}?page_size", "page_size", "page_size="),
        ("/api/v1/catalog/prices?product_id", "product_id", "product_id="),
        ("/mgt/v1/customers?environment", "environment", "environment="),
    ],
)
def test_a_query_name_without_a_value_is_400_naming_it(stack, url, name, hint):  # type: ignore[no-untyped-def]
    status, reason, message, metadata = _error(stack.request("GET", url, None, SERVICE))
    assert (status, reason) == (400, "MALFORMED_REQUEST"), message
    assert metadata.get("field") == name, (metadata, message)
    assert hint in message, message


def test_an_unknown_bare_name_is_field_unknown_and_a_valued_one_still_passes(stack):  # type: ignore[no-untyped-def]
    status, reason, message, metadata = _error(
        stack.request("GET", f"{PRODUCTS}?bogus", None, SERVICE)
    )
    assert (status, reason, metadata.get("field")) == (400, "FIELD_UNKNOWN", "bogus"), message
    for query in ("include_inactive=true", "include_inactive=false&page_size=5", ""):
        resp = stack.request("GET", f"{PRODUCTS}?{query}", None, SERVICE)
        assert resp.status == 200, (query, resp.body)
    # An empty pair (`&&`, a trailing `&`) is no parameter at all, as form decoders read it.
    assert stack.request("GET", f"{PRODUCTS}?page_size=5&&", None, SERVICE).status == 200


def test_a_write_with_a_bare_query_name_changes_nothing(stack):  # type: ignore[no-untyped-def]
    before = _count(stack)
    for query in ("request_id", "=abc"):
        resp = stack.request(
            "POST", f"{PRODUCTS}?{query}", {"name": f"Bare {uuid.uuid4().hex[:6]}"}, SERVICE
        )
        assert (resp.status, resp.reason) == (400, "MALFORMED_REQUEST"), resp.body
    assert _count(stack) == before


# -- 2. An unknown method, a control byte in a header ---------------------------------------


def _raw(stack: Stack, request: bytes) -> Response:
    """One HTTP/1.1 request written byte for byte (http.client refuses to send these)."""
    host, port = stack.rest_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(request)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("FOO", "/api/v1/credits/balance"),
        ("FOO", PRODUCTS),
        ("PROPFIND", "/mgt/v1/customers/x1"),
        ("get", PRODUCTS),
    ],
)
def test_an_unknown_method_is_405_with_allow_as_a_known_one_the_path_does_not_take(  # type: ignore[no-untyped-def]
    stack, method, url
):
    known = stack.request("TRACE", url, None, SERVICE)
    assert (known.status, known.reason) == (405, "ROUTE_NOT_FOUND"), known.body
    resp = _raw(
        stack,
        f"{method} {url} HTTP/1.1\r\nHost: x\r\nx-api-key: {SERVICE_KEY}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    status, reason, message, _ = _error(resp)
    assert (status, reason) == (405, "ROUTE_NOT_FOUND"), message
    assert resp.headers["allow"] == known.headers["allow"], (resp.headers, known.headers)
    assert method in message and "JSON" not in message, message


def test_a_query_without_a_content_type_is_refused_naming_the_method_not_the_json(stack):  # type: ignore[no-untyped-def]
    """Envoy refuses a QUERY (a draft method) with no Content-Type before any route or filter
    (`query_missing_content_type`): the answer says QUERY is no method here, not that a JSON
    body does not parse; with a Content-Type it is 405 with Allow, as FOO."""
    bare = _raw(
        stack,
        f"QUERY {PRODUCTS} HTTP/1.1\r\nHost: x\r\nx-api-key: {SERVICE_KEY}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    status, reason, message, _ = _error(bare)
    assert (status, reason) == (400, "MALFORMED_REQUEST"), message
    assert "QUERY" in message and "JSON" not in message, message
    typed = _raw(
        stack,
        f"QUERY {PRODUCTS} HTTP/1.1\r\nHost: x\r\nx-api-key: {SERVICE_KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode(),
    )
    status, reason, message, _ = _error(typed)
    assert (status, reason) == (405, "ROUTE_NOT_FOUND"), message
    assert "GET" in typed.headers["allow"], typed.headers


def test_an_unknown_method_on_a_path_that_does_not_exist_is_still_404(stack):  # type: ignore[no-untyped-def]
    resp = _raw(stack, b"FOO /api/v1/nothing/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (resp.status, resp.reason) == (404, "ROUTE_NOT_FOUND"), resp.body


@pytest.mark.parametrize(
    "url", ["/v1/billing/webhooks", "/healthz", "/v1/health", "/api/openapi.json", "/nothing"]
)
def test_an_unknown_method_elsewhere_is_a_4xx_never_the_json_blame(stack, url):  # type: ignore[no-untyped-def]
    """Routes json_fields.lua does not check (the sidecar's, the health route) answer an
    unknown method as they answer TRACE: now that the codec lets it through, never a 5xx."""
    known = stack.request("TRACE", url, None, {})
    resp = _raw(stack, f"FOO {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert 400 <= resp.status < 500, (resp.status, resp.body)
    assert resp.status == known.status, (resp.body, known.body)
    assert b"JSON request" not in resp.body, resp.body


@pytest.mark.parametrize("byte", [b"\x01", b"\x1b", b"\x7f", b"\x00"])
def test_a_control_byte_in_a_header_value_is_400_naming_the_cause(stack, byte):  # type: ignore[no-untyped-def]
    before = _count(stack)
    body = b'{"name": "Control"}'
    resp = _raw(
        stack,
        b"POST "
        + PRODUCTS.encode()
        + b" HTTP/1.1\r\nHost: x\r\nx-api-key: "
        + SERVICE_KEY.encode()
        + b"\r\ncontent-type: application/json\r\nx-note: a"
        + byte
        + b"b\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body,
    )
    status, reason, message, _ = _error(resp)
    assert (status, reason) == (400, "MALFORMED_REQUEST"), message
    assert "control character" in message and "header" in message, message
    assert "JSON request" not in message, message
    assert _count(stack) == before


@pytest.mark.parametrize(
    ("url", "headers", "cause"),
    [
        (PRODUCTS, {"grpc-timeout": "1S"}, "grpc-timeout"),
        (PRODUCTS, {"content-encoding": "gzip"}, "Content-Encoding"),
        ("/v1/health?bogus=1", {}, "unknown query parameter"),
    ],
)
def test_the_gateways_own_400s_are_not_blamed_on_the_json_body(stack, url, headers, cause):  # type: ignore[no-untyped-def]
    """A 400 json_fields.lua (or the health route's Lua) answers says its own cause; only the
    transcoder's is about the body not parsing as the RPC's JSON request."""
    before = _count(stack)
    resp = stack.request(
        "POST" if url == PRODUCTS else "GET", url, {"name": "Own"}, {**SERVICE, **headers}
    )
    status, reason, message, _ = _error(resp)
    assert (status, reason) == (400, "MALFORMED_REQUEST"), message
    assert cause in message and "JSON request" not in message, message
    assert _count(stack) == before
    wrong_type = stack.request("POST", PRODUCTS, {"name": 5}, SERVICE)
    assert "JSON request" in _error(wrong_type)[2], wrong_type.body  # the transcoder's, as before


# -- 3. A raw `+` in a query e-mail -----------------------------------------------------------

SUBSCRIPTION = "/mgt/v1/customer/subscription?customerEmail="


def test_a_raw_plus_in_a_query_email_says_to_send_it_as_percent_2b(stack):  # type: ignore[no-untyped-def]
    status, reason, message, metadata = _error(
        stack.request("GET", SUBSCRIPTION + "user+tag@example.com", None, SERVICE)
    )
    assert (status, reason, metadata.get("field")) == (400, "EMAIL_INVALID", "customerEmail")
    assert "%2B" in message, message


def test_an_encoded_plus_is_taken_and_a_space_no_plus_mends_has_no_hint(stack):  # type: ignore[no-untyped-def]
    encoded = stack.request("GET", SUBSCRIPTION + "user%2Btag@example.com", None, SERVICE)
    assert encoded.reason != "EMAIL_INVALID", encoded.body
    assert encoded.status in (200, 404), encoded.body
    for value in ("not+an+address", "a+b@c@example.com"):
        status, reason, message, _ = _error(
            stack.request("GET", SUBSCRIPTION + value, None, SERVICE)
        )
        assert (status, reason) == (400, "EMAIL_INVALID"), message
        assert "%2B" not in message, (value, message)


# -- 4. `?environment=` as the document lists it ----------------------------------------------


@pytest.mark.parametrize("value", ["TEST", "+test", "test+", "Live", "%20live", "prod"])
@pytest.mark.parametrize(
    "url", ["/mgt/v1/customers?environment=", "/mgt/v1/customers/x1?environment="]
)
def test_an_environment_not_written_as_the_document_lists_it_is_400(stack, url, value):  # type: ignore[no-untyped-def]
    status, reason, message, metadata = _error(stack.request("GET", url + value, None, SERVICE))
    assert (status, reason, metadata.get("field")) == (400, "INVALID_ARGUMENT", "environment")
    assert "'test'" in message and "'live'" in message, message


def test_the_listed_environments_still_pass(stack):  # type: ignore[no-untyped-def]
    for value in ("test", ""):
        resp = stack.request("GET", f"/mgt/v1/customers?environment={value}", None, SERVICE)
        assert resp.status == 200, (value, resp.body)
    live = stack.request("GET", "/mgt/v1/customers?environment=live", None, SERVICE)
    assert (live.status, live.reason) == (403, "ENVIRONMENT_MISMATCH"), live.body
