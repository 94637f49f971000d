"""gRPC's own headers sent by a REST caller, through a real Envoy.

The transcoder passes a REST request's headers on to the server as gRPC metadata, and grpcio
parses some of them itself before any code of ours runs: a deadline (`grpc-timeout`), an
encoding, a status, a retry count, and binary metadata (any name ending in `-bin`, base64).
One it cannot parse was a 500 INTERNAL with no reason ("Error parsing 'grpc-timeout'
metadata"), even a well-formed `grpc-timeout: 1S`. A REST call has no use for any of them:
the gateway refuses them, 400 MALFORMED_REQUEST naming the header, on every route that
reaches the server, and nothing is stored.
"""

from __future__ import annotations

import http.client
import uuid

import pytest

from tests.conftest import SERVICE_KEY
from tests.devstack import Response, Stack

pytestmark = pytest.mark.envoy

# (header, value): each once broke grpcio's parsing of the request's metadata.
GRPC_OWN = [
    ("grpc-timeout", "1S"),
    ("grpc-timeout", "abc"),
    ("grpc-timeout", "0S"),
    ("grpc-encoding", "bogus"),
    ("grpc-internal-encoding-request", "bogus"),
    ("grpc-status", "x"),
    ("grpc-previous-rpc-attempts", "x"),
    ("grpc-retry-pushback-ms", "x"),
    ("grpc-trace-bin", "!!!"),
    ("x-anything-bin", "AAAA"),
    ("X-Anything-Bin", "==="),
]
# A sample of routes: reads and writes, both surfaces, a body binding and a body field.
ROUTES = [
    ("GET", "/mgt/v1/catalog/products", None),
    ("GET", "/api/v1/catalog/products", None),
    ("POST", "/mgt/v1/token/issue", b'{"principal_id": "hdr-p"}'),
    ("POST", "/mgt/v1/accounts/hdr-p/credits/grants", b'{"credit_type": "u", "amount": "1"}'),
    ("POST", "/mgt/v1/catalog/products?request_id=hdr-1", b'{"name": "Header"}'),
    ("GET", "/v1/health", None),
]


def _send(
    stack: Stack, method: str, path: str, body: bytes | None, extra: tuple[str, str]
) -> Response:
    """One request with the service key, a JSON content type and `extra`, its name as given."""
    host, port = stack.rest_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in [
            ("x-api-key", SERVICE_KEY),
            ("content-type", "application/json"),
            extra,
            *([("content-length", str(len(body)))] if body is not None else []),
        ]:
            conn.putheader(name, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def _products(stack: Stack) -> int:
    resp = stack.request(
        "GET", "/mgt/v1/catalog/products?include_inactive=true", None, {"x-api-key": SERVICE_KEY}
    )
    return len(resp.json()["products"])


@pytest.mark.parametrize("header,value", GRPC_OWN, ids=[f"{h}={v}" for h, v in GRPC_OWN])
def test_a_grpc_header_from_a_rest_caller_is_400_naming_it(stack, header, value):  # type: ignore[no-untyped-def]
    before = _products(stack)
    for method, path, body in ROUTES:
        resp = _send(stack, method, path.replace("hdr-1", uuid.uuid4().hex), body, (header, value))
        assert resp.status == 400, (method, path, resp.status, resp.body[:200])
        assert resp.reason == "MALFORMED_REQUEST", (path, resp.body[:200])
        assert header.lower() in resp.json()["message"], resp.body[:200]
    assert _products(stack) == before


# Legal HTTP header names (RFC 9110 tokens) that gRPC metadata cannot carry: each was a 500
# INTERNAL "Illegal header key" from grpcio (schemathesis sent such names).
ILLEGAL_FOR_GRPC = [
    "x!y",
    "a#b",
    "q$",
    "p%25",
    "am&p",
    "quo'te",
    "st*r",
    "pl+us",
    "ca^ret",
    "back`tick",
    "pi|pe",
    "til~de",
]


@pytest.mark.parametrize("header", ILLEGAL_FOR_GRPC)
def test_a_header_name_grpc_cannot_carry_is_400_naming_it_never_500(stack, header):  # type: ignore[no-untyped-def]
    before = _products(stack)
    for method, path, body in ROUTES:
        resp = _send(stack, method, path.replace("hdr-1", uuid.uuid4().hex), body, (header, "1"))
        assert resp.status == 400, (method, path, resp.status, resp.body[:200])
        assert resp.reason == "MALFORMED_REQUEST", (path, resp.body[:200])
        assert header in resp.json()["message"], resp.body[:200]
    assert _products(stack) == before


def test_ordinary_headers_still_pass(stack):  # type: ignore[no-untyped-def]
    """Headers that are not gRPC's own (a request id, a trace context, one that merely holds
    `bin` or `grpc`) reach the server as before."""
    for extra in [
        ("x-request-id", "r-1"),
        ("traceparent", "junk"),
        ("x-binary", "1"),
        ("x-grpc", "1"),
        ("X-Mixed-Case_and.dots", "1"),
    ]:
        resp = _send(stack, "GET", "/mgt/v1/catalog/products", None, extra)
        assert resp.status == 200, (extra, resp.body[:200])


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", " GZIP ", "x-unknown"])
def test_a_compressed_or_labelled_body_is_400_and_nothing_is_stored(stack, coding):  # type: ignore[no-untyped-def]
    """The gateway does not decompress request bodies: a Content-Encoding other than identity
    on a REST route is refused, 400 MALFORMED_REQUEST naming it, whether the body really is
    compressed or plain JSON under the label (once taken as if the label meant nothing)."""
    import gzip

    before = _products(stack)
    plain = b'{"name": "Encoded"}'
    for body in (plain, gzip.compress(plain)):
        path = f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}"
        resp = _send(stack, "POST", path, body, ("content-encoding", coding))
        assert resp.status == 400, (coding, resp.status, resp.body[:200])
        assert resp.reason == "MALFORMED_REQUEST", resp.body[:200]
        assert "content-encoding" in resp.json()["message"].lower(), resp.body[:200]
    assert _products(stack) == before


def test_identity_content_encoding_is_taken(stack):  # type: ignore[no-untyped-def]
    path = f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}"
    body = b'{"name": "Identity"}'
    resp = _send(stack, "POST", path, body, ("content-encoding", "identity"))
    assert resp.status == 200, resp.body[:200]
    assert resp.json()["name"] == "Identity"
