"""OpenAPI 3.1 through Envoy: the document, the interactive page, and schemathesis against it."""

from __future__ import annotations

import json

from google.api import annotations_pb2
from google.protobuf import descriptor_pool
from google.protobuf.descriptor_pb2 import FileDescriptorSet

from tests.conftest import SERVICE_KEY
from tollbooth.apidocs import OPENAPI
from tollbooth.gateway import DESCRIPTOR
from tollbooth.openapi import SERVICES

SERVICE = {"x-api-key": SERVICE_KEY}


def _bindings() -> set[tuple[str, str]]:
    """(verb, path template) of every REST binding of the transcoded services."""
    pool = descriptor_pool.DescriptorPool()
    for f in FileDescriptorSet.FromString(DESCRIPTOR.read_bytes()).file:
        pool.Add(f)
    found = set()
    for name in SERVICES:
        for method in pool.FindServiceByName(name).methods:
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            for b in [rule, *rule.additional_bindings]:
                verb = b.WhichOneof("pattern")
                if verb:
                    found.add((verb, getattr(b, verb)))
    return found


def test_served_document_validates_as_openapi_3_1_and_lists_every_binding(stack):  # type: ignore[no-untyped-def]
    from openapi_spec_validator import OpenAPIV31SpecValidator

    resp = stack.request("GET", "/api/openapi.json")
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    assert doc == json.loads(OPENAPI.read_text())
    assert doc["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(doc).validate()
    listed = {(verb, path) for path, ops in doc["paths"].items() for verb in ops}
    assert {(verb, path.split("=")[0]) for verb, path in _bindings()} <= listed
    grant = doc["paths"]["/mgt/v1/accounts/{account}/credits/grants"]["post"]
    assert grant["security"] == [{"serviceKey": []}]
    body = grant["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False
    assert body["properties"]["amount"]["type"] == "string"
    assert body["properties"]["expire_time"]["format"] == "date-time"
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_docs_page_and_its_assets_are_served_without_a_cdn(stack):  # type: ignore[no-untyped-def]
    page = stack.request("GET", "/api/docs")
    assert page.status == 200
    html = page.body.decode()
    assert "/api/openapi.json" in html and "https://" not in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        resp = stack.request("GET", f"/api/docs/assets/{asset}")
        assert resp.status == 200 and len(resp.body) > 1000, asset
    assert stack.request("GET", "/api/docs/assets/..%2Fpackage.json").status == 404
