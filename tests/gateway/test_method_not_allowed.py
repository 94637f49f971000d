"""A method a REST path does not take is 405 with `Allow` (RFC 9110), not the 404 of a path
that does not exist: the transcoder answered both alike, so a client (and schemathesis'
unsupported_method check) could not tell a wrong method from a wrong URL."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import SERVICE_KEY
from tollbooth.apidocs import OPENAPI

SERVICE = {"x-api-key": SERVICE_KEY}
DOC = json.loads(OPENAPI.read_text())
VERBS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _url(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", template)


def _declared(template: str) -> set[str]:
    """The methods of every document path the URL of `template` also matches (`…/{id}` and
    `…/{id}:archive` share a URL shape)."""
    url = _url(template)
    found: set[str] = set()
    for path, ops in DOC["paths"].items():
        if re.fullmatch(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)), url):
            found |= {verb.upper() for verb in ops}
    return found


def test_every_path_of_the_document_answers_405_with_allow_to_a_method_it_does_not_take(stack):  # type: ignore[no-untyped-def]
    checked = 0
    for template in DOC["paths"]:
        declared = _declared(template)
        for method in ("TRACE", *[v for v in VERBS if v not in declared][:1]):
            headers = SERVICE if template.startswith("/mgt/") else {}
            resp = stack.request(method, _url(template), None, headers)
            assert resp.status == 405, (method, template, resp.body)
            assert resp.reason == "ROUTE_NOT_FOUND", resp.body
            assert set(resp.headers["allow"].split(", ")) == declared, (template, resp.headers)
            checked += 1
    assert checked >= 100, checked


@pytest.mark.parametrize(
    ("method", "url"),
    [("DELETE", "/mgt/v1/nothing-here"), ("GET", "/api/v1/nothing/x"), ("TRACE", "/mgt/v2/events")],
)
def test_a_path_that_does_not_exist_is_still_404(stack, method, url):  # type: ignore[no-untyped-def]
    resp = stack.request(method, url, None, SERVICE)
    assert (resp.status, resp.reason) == (404, "ROUTE_NOT_FOUND"), resp.body


def test_a_method_the_path_takes_still_reaches_the_server(stack):  # type: ignore[no-untyped-def]
    """The control: a declared method is answered by the server (which authenticates)."""
    listed = stack.request("GET", "/mgt/v1/catalog/products", None, SERVICE)
    assert listed.status == 200, listed.body
    unauthenticated = stack.request("GET", "/mgt/v1/catalog/products", None, {})
    assert unauthenticated.status == 401


@pytest.mark.parametrize(
    "url", ["/mgt/v1/catalog/products", "/api/v1/catalog/prices", "/mgt/v1/customers/x1"]
)
def test_head_on_a_path_that_takes_get_is_405_with_allow_not_the_404_of_a_missing_path(  # type: ignore[no-untyped-def]
    stack, url
):
    """The transcoder serves no HEAD (it answered 404, as for a URL that does not exist): the
    path exists, so HEAD is 405 naming the methods it takes, as any other method it does not
    take is."""
    resp = stack.request("HEAD", url, None, SERVICE)
    assert resp.status == 405, (resp.status, resp.headers)
    assert "GET" in resp.headers["allow"].split(", "), resp.headers
    assert "HEAD" not in resp.headers["allow"], resp.headers


@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("GET", "/v1/billing/webhooks", {"POST"}),
        ("DELETE", "/healthz", {"GET", "HEAD"}),
        ("POST", "/readyz", {"GET", "HEAD"}),
        ("PUT", "/api/openapi.json", {"GET", "HEAD"}),
        ("POST", "/v1/health", {"GET", "HEAD"}),
        ("TRACE", "/v1/health", {"GET", "HEAD"}),
        ("FOO", "/v1/health", {"GET", "HEAD"}),
    ],
)
def test_the_health_and_sidecar_paths_answer_405_with_allow_too(stack, method, url, allowed):  # type: ignore[no-untyped-def]
    """The sidecar's own routes (Stripe's webhooks, its health, the document) and the
    server's REST health route say which methods they take, as the API's paths do."""
    resp = stack.request(method, url, None, {})
    assert (resp.status, resp.reason) == (405, "ROUTE_NOT_FOUND"), resp.body
    assert set(resp.headers["allow"].split(", ")) == allowed, resp.headers
