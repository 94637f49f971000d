"""gRPC's transport headers stay between Envoy and the billing server: a REST answer (an
error or not, the server's or Envoy's own) carries no `grpc-*` header (grpc-status,
grpc-message, grpc-status-details-bin, grpc-encoding, grpc-accept-encoding, ...) to a browser.
The transcoder passed them on; a Lua filter in the gateway config (its own, apart from
json_fields.lua, kept by `gateway.render`) now drops them. The JSON error body is unchanged.
A gRPC caller on a REST route (content-type application/grpc) is still answered in gRPC."""

from __future__ import annotations

import urllib.parse
import uuid

import yaml

from tests.conftest import SERVICE_KEY
from tollbooth.gateway import render

SERVICE = {"x-api-key": SERVICE_KEY}


def grpc_headers(resp) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {k: v for k, v in resp.headers.items() if k.lower().startswith("grpc-")}


def error_info(resp) -> dict:  # type: ignore[no-untyped-def, type-arg]
    details = [d for d in resp.json()["details"] if d["@type"].endswith("ErrorInfo")]
    assert len(details) == 1, resp.body
    return details[0]


def test_a_rest_error_from_the_server_carries_no_grpc_headers(stack) -> None:  # type: ignore[no-untyped-def]
    resp = stack.request("GET", "/mgt/v1/catalog/products/prod_missing", None, SERVICE)
    assert resp.status == 404, resp.body
    assert grpc_headers(resp) == {}
    body = resp.json()
    assert body["code"] == 5 and "prod_missing" in body["message"]
    assert error_info(resp)["reason"] == "NOT_FOUND"


def test_a_rest_refusal_with_rich_details_carries_no_grpc_headers(stack) -> None:  # type: ignore[no-untyped-def]
    resp = stack.request(
        "POST", f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}", {"name": ""}, SERVICE
    )
    assert resp.status == 400, resp.body
    assert grpc_headers(resp) == {}
    assert error_info(resp)["reason"] == "FIELD_REQUIRED"


def test_an_unauthenticated_rest_call_carries_no_grpc_headers(stack) -> None:  # type: ignore[no-untyped-def]
    resp = stack.request(
        "GET", "/api/v1/catalog/products", None, {"origin": "http://localhost:3000"}
    )
    assert resp.status == 401, resp.body
    assert grpc_headers(resp) == {}
    assert error_info(resp)["reason"] == "CREDENTIALS_MISSING"
    exposed = resp.headers.get("access-control-expose-headers", "")
    assert "grpc-" not in exposed.lower()


def test_a_rest_success_carries_no_grpc_headers(stack) -> None:  # type: ignore[no-untyped-def]
    made = stack.request(
        "POST",
        f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}",
        {"name": "Plain"},
        SERVICE,
    )
    assert made.status == 200, made.body
    assert grpc_headers(made) == {}
    listed = stack.request("GET", "/mgt/v1/catalog/products", None, SERVICE)
    assert listed.status == 200 and grpc_headers(listed) == {}


def test_envoys_own_replies_carry_no_grpc_headers(stack) -> None:  # type: ignore[no-untyped-def]
    for path in ("/nowhere", "/api/v1/nowhere"):
        resp = stack.request("GET", path, None, SERVICE)
        assert resp.status == 404, (path, resp.body)
        assert grpc_headers(resp) == {}, path


def test_a_grpc_caller_on_a_rest_route_is_still_answered_in_grpc(stack) -> None:  # type: ignore[no-untyped-def]
    resp = stack.request(
        "POST",
        "/mgt/v1/catalog/products",
        b"\x00\x00\x00\x00\x00",
        {**SERVICE, "content-type": "application/grpc", "te": "trailers"},
    )
    assert resp.headers.get("grpc-status") == "3", resp.headers
    assert "MALFORMED_REQUEST" in urllib.parse.unquote(resp.headers.get("grpc-message", ""))


def test_render_keeps_the_header_filter_beside_json_fields(stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = yaml.safe_load(render(stack.settings, tmp_path).read_text())
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filters = manager["typed_config"]["http_filters"]
    lua = [f for f in filters if f["typed_config"]["@type"].endswith("lua.v3.Lua")]
    sources = [f["typed_config"]["default_source_code"] for f in lua]
    assert any(s.get("filename", "").endswith("json_fields.lua") for s in sources), sources
    hiding = [s for s in sources if "grpc%-" in s.get("inline_string", "")]
    assert len(hiding) == 1, sources
    # It answers last (Envoy runs response filters in reverse): first in the list.
    assert filters.index(lua[sources.index(hiding[0])]) == 0
