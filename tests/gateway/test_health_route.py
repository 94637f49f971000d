"""GET /v1/health through a real Envoy: the billing server's own grpc.health.v1 Check,
transcoded (protos/gateway), no credentials; bench.core's REST no-op."""

from __future__ import annotations

import urllib.parse

import pytest
from grpc_health.v1 import health_pb2

from tests.conftest import make_env
from tests.devstack import migrated_sqlite, start_stack

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_route_answers_serving_without_credentials(stack):  # type: ignore[no-untyped-def]
    resp = stack.request("GET", "/v1/health")
    assert resp.status == 200
    assert resp.json() == {"status": "SERVING"}


def test_health_route_is_503_while_the_server_is_not_serving(stack):  # type: ignore[no-untyped-def]
    stack.health.set("", NOT_SERVING)
    try:
        resp = stack.request("GET", "/v1/health")
    finally:
        stack.health.set("", SERVING)
    assert resp.status == 503
    assert resp.json() == {"status": "NOT_SERVING"}
    assert stack.request("GET", "/v1/health").status == 200


def test_health_route_answers_head_like_get_without_a_body(stack):  # type: ignore[no-untyped-def]
    """Uptime monitors and load balancers probe with HEAD: the same Check, the same status,
    no body (was 404 ROUTE_NOT_FOUND: the transcoder binds GET only)."""
    served = stack.request("HEAD", "/v1/health")
    assert served.status == 200
    assert served.body == b""
    stack.health.set("", NOT_SERVING)
    try:
        refused = stack.request("HEAD", "/v1/health")
    finally:
        stack.health.set("", SERVING)
    assert refused.status == 503
    assert refused.body == b""
    assert stack.request("HEAD", "/v1/health?service=billing.v1.NoSuchService").status == 404


@pytest.mark.parametrize("origin", ["http://evil.example", "http://localhost:3000"])
def test_health_route_refuses_a_browser_preflight_like_every_route(stack, origin):  # type: ignore[no-untyped-def]
    """No browser origin may call /v1/health (it has no CORS policy): its preflight is the
    403 ORIGIN_NOT_ALLOWED of every other route, not a 404 that reads like a missing route."""
    resp = stack.request(
        "OPTIONS",
        "/v1/health",
        headers={"origin": origin, "access-control-request-method": "GET"},
    )
    assert resp.status == 403
    assert resp.reason == "ORIGIN_NOT_ALLOWED"
    assert "access-control-allow-origin" not in {k.lower() for k in resp.headers}


def test_health_route_names_one_service_with_the_query(stack):  # type: ignore[no-untyped-def]
    served = stack.request("GET", "/v1/health?service=billing.v1.CatalogService")
    assert served.status == 200
    assert served.json() == {"status": "SERVING"}
    assert stack.request("GET", "/v1/health?service=billing.v1.NoSuchService").status == 404


def test_health_route_is_503_when_the_server_is_down(tmp_path):  # type: ignore[no-untyped-def]
    """A stack of its own: its gRPC server is stopped, Envoy and the sidecar still run."""
    url = migrated_sqlite(tmp_path / "billing.db")
    down = start_stack(url, make_env(url), tmp_path)
    try:
        assert down.request("GET", "/v1/health").status == 200
        down.server.stop(grace=None).wait()
        resp = down.request("GET", "/v1/health")
    finally:
        down.close()
    assert resp.status == 503
    assert resp.reason == "SERVICE_UNAVAILABLE"


def test_health_route_refuses_a_service_that_is_not_utf8_as_bad_input(stack):  # type: ignore[no-untyped-def]
    """`%ff` decodes to a byte that is not UTF-8: the request is the client's error (400),
    not the server's (grpcio's own deserialiser answered INTERNAL, a 500)."""
    resp = stack.request("GET", "/v1/health?service=%ff")
    assert resp.status == 400
    assert resp.reason == "MALFORMED_REQUEST"


@pytest.mark.parametrize(
    "query",
    [
        "service=nope&service=billing.v1.CatalogService",
        "service=billing.v1.CatalogService&servic%65=nope",
    ],
)
def test_health_route_refuses_a_service_given_twice(stack, query):  # type: ignore[no-untyped-def]
    """As on every other route: the transcoder would keep the last value silently."""
    resp = stack.request("GET", f"/v1/health?{query}")
    assert resp.status == 400
    assert resp.reason == "MALFORMED_REQUEST"
    assert "service" in resp.json()["message"]


@pytest.mark.parametrize("te", [{"te": "trailers"}, {}])
def test_health_route_does_not_turn_a_grpc_callers_answer_into_a_503(stack, te):  # type: ignore[no-untyped-def]
    """A gRPC request (not transcoded) to /v1/health is the caller's error, as on every other
    REST route: refused by the gateway with INVALID_ARGUMENT in gRPC's own form (a 200 with
    grpc-status), never a 5xx. Passed on untranscoded, one without `te: trailers` came back
    as the server's reset, grpc-status 14 "unavailable; retry"."""
    resp = stack.request(
        "POST",
        "/v1/health",
        b"\x00\x00\x00\x00\x00",
        headers={"content-type": "application/grpc", **te},
    )
    assert resp.status == 200
    assert resp.headers["grpc-status"] == "3"  # INVALID_ARGUMENT
    assert "MALFORMED_REQUEST" in urllib.parse.unquote(resp.headers["grpc-message"])


def test_health_route_names_an_unknown_service_with_a_stable_reason(stack):  # type: ignore[no-untyped-def]
    """A 404 like every other one of the API: the error shape with NOT_FOUND, naming the
    service, not a bare {"status": "UNKNOWN"} that reads like a health status."""
    resp = stack.request("GET", "/v1/health?service=billing.v1.NoSuchService")
    assert resp.status == 404
    assert resp.reason == "NOT_FOUND"
    assert "billing.v1.NoSuchService" in resp.json()["message"]


def test_health_route_drops_the_internal_headers_a_client_sends(stack):  # type: ignore[no-untyped-def]
    """The headers json_fields.lua owns (it is not run here) never reach the server from a
    client: a forged repeats header does not refuse a query that gives `service` once."""
    resp = stack.request(
        "GET",
        "/v1/health?service=billing.v1.CatalogService",
        headers={"x-billing-query-repeats": "service", "x-billing-json-fields": "!nope,nope"},
    )
    assert resp.status == 200
    assert resp.json() == {"status": "SERVING"}


@pytest.mark.parametrize("query", ["bogus=1", "service=billing.v1.CatalogService&x=1"])
def test_health_route_refuses_an_unknown_query_parameter(stack, query):  # type: ignore[no-untyped-def]
    """The transcoder now passes unknown query parameters on (the server refuses them on the
    API routes, FIELD_UNKNOWN); this route, which no server check sees, refuses them itself,
    as the transcoder did (400 MALFORMED_REQUEST)."""
    resp = stack.request("GET", f"/v1/health?{query}")
    assert (resp.status, resp.reason) == (400, "MALFORMED_REQUEST"), resp.body


@pytest.mark.parametrize("query", ["service", "=1", "service=billing.v1.CatalogService&="])
def test_health_route_refuses_a_parameter_without_a_value_or_a_name(stack, query):  # type: ignore[no-untyped-def]
    """As on the API routes: `?service` without `=` (which the transcoder ignores: the overall
    health answered) and a parameter with no name are 400 MALFORMED_REQUEST saying so."""
    resp = stack.request("GET", f"/v1/health?{query}")
    assert (resp.status, resp.reason) == (400, "MALFORMED_REQUEST"), resp.body
    message = resp.json()["message"]
    assert ("no value" in message) if query == "service" else ("no name" in message), message
