"""OpenAPI 3.1 through Envoy: the document, the interactive page, and schemathesis against it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pool
from google.protobuf.descriptor_pb2 import FileDescriptorSet

from tests.conftest import ARTIFACTS, SERVICE_KEY
from tollbooth.apidocs import OPENAPI
from tollbooth.gateway import DESCRIPTOR, TEMPLATE
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
    assert {(verb, _template(path)) for verb, path in _bindings()} <= listed
    grant = doc["paths"]["/mgt/v1/accounts/{account}/credits/grants"]["post"]
    assert grant["security"] == [{"serviceKey": []}]
    body = grant["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False
    assert body["properties"]["amount"]["type"] == "string"
    # An RFC 3339 string, or the {seconds, nanos} object the transcoder also reads.
    expire = body["properties"]["expire_time"]["allOf"][0]["anyOf"]  # allOf: its description
    assert any(option.get("format") == "date-time" for option in expire), expire
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_the_document_covers_every_service_envoy_transcodes() -> None:
    """AccountService and CustomerService (/mgt/v1/accounts, /mgt/v1/customers) were served
    through Envoy but missing from the document, so clients generated from it had neither."""
    transcoded = set(re.findall(r"^\s*- (billing\.v1\.\w+Service)\s*$", TEMPLATE.read_text(), re.M))
    assert "billing.v1.AccountService" in transcoded
    assert set(SERVICES) == transcoded
    doc = json.loads(OPENAPI.read_text())
    assert "post" in doc["paths"]["/mgt/v1/accounts"]
    assert "delete" in doc["paths"]["/mgt/v1/customers/{customer_id}"]


def test_a_rate_limited_answer_with_its_retry_info_matches_the_document(stack):  # type: ignore[no-untyped-def]
    """A 429 RATE_LIMITED carries a google.rpc.RetryInfo after its ErrorInfo; the document's
    Status allowed ErrorInfo items only, so every 429 failed response-schema validation."""
    from jsonschema import Draft202012Validator

    document = stack.request("GET", "/api/openapi.json").json()
    issued = stack.request(
        "POST",
        "/mgt/v1/token/issue",
        {"principal_id": "docs-rate-limited", "user_id": "u", "scopes": ["portal"]},
        SERVICE,
    )
    assert issued.status == 200, issued.body
    bearer = {"authorization": f"Bearer {issued.json()['access_token']}"}
    for _ in range(40):  # session_creates: 20 a minute per account, charged before the handler
        got = stack.request("POST", "/api/v1/portal/sessions", {"request_id": "p"}, bearer)
        if got.status == 429:
            break
    assert got.status == 429, got.body
    body = got.json()
    assert [d["@type"].rsplit(".", 1)[-1] for d in body["details"]] == ["ErrorInfo", "RetryInfo"]
    schema = {"$ref": "#/components/schemas/Status", "components": document["components"]}
    errors = list(Draft202012Validator(schema).iter_errors(body))
    assert errors == [], [e.message for e in errors]


def test_docs_page_and_its_assets_are_served_without_a_cdn(stack):  # type: ignore[no-untyped-def]
    page = stack.request("GET", "/api/docs")
    assert page.status == 200
    html = page.body.decode()
    assert "/api/docs/assets/init.js" in html and "https://" not in html
    init = stack.request("GET", "/api/docs/assets/init.js")
    assert init.status == 200 and '"/api/openapi.json"' in init.body.decode()
    assert "https://" not in init.body.decode()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        resp = stack.request("GET", f"/api/docs/assets/{asset}")
        assert resp.status == 200 and len(resp.body) > 1000, asset
    assert stack.request("GET", "/api/docs/assets/..%2Fpackage.json").status == 404


def test_docs_page_cannot_be_framed_and_runs_no_inline_script(stack):  # type: ignore[no-untyped-def]
    """The page keeps what "Authorize" was given (persistAuthorization): another site may not
    frame it (clickjacking "Try it out"), and its policy allows scripts from this origin only."""
    page = stack.request("GET", "/api/docs")
    assert page.status == 200
    headers = {k.lower(): v for k, v in page.headers.items()}
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    policy = dict(
        (part.strip().split(" ", 1) + [""])[:2]
        for part in headers["content-security-policy"].split(";")
    )
    assert policy["frame-ancestors"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert "<script>" not in page.body.decode()  # the set-up is an asset, not inline
    document = stack.request("GET", "/api/openapi.json")
    assert document.headers["x-content-type-options"] == "nosniff"


def test_docs_authorize_and_try_it_out_in_a_browser_with_a_token_and_with_a_key(stack, browser):  # type: ignore[no-untyped-def]
    """README "For frontend developers": in Chromium through Envoy, "Authorize" with a bearer
    token then "Try it out" on /api/v1 operations, and with the service key on /mgt/v1 ones."""
    issued = stack.request(
        "POST",
        "/mgt/v1/token/issue",
        {"principal_id": "docs-user", "scopes": ["credits:read"]},
        SERVICE,
    )
    assert issued.status == 200, issued.body
    token = issued.json()["access_token"]

    def session(scheme: str, value: str, operations: list[tuple[str, dict[str, str], int]]) -> None:
        page = browser.new_page()
        refused: list[str] = []
        page.on(
            "console",
            lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
        )
        try:
            page.goto(stack.rest_url + "/api/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            page.click("button.authorize")
            forms = page.locator(".modal-ux .auth-container")
            for i in range(forms.count()):
                form = forms.nth(i)
                if scheme in form.inner_text():
                    form.locator("input").fill(value)
                    form.locator("button.authorize").click()
            page.click(".modal-ux button.btn-done")
            for operation, params, status in operations:
                block = page.locator(f"#operations-{operation}")
                block.locator(".opblock-summary").first.click()
                if block.locator("button.execute").count() == 0:
                    block.locator("button.try-out__btn").click()
                for name, text in params.items():
                    if name == "body":
                        block.locator("textarea.body-param__text").fill(text)
                    else:
                        block.locator(f"tr[data-param-name='{name}'] input").fill(text)
                block.locator("button.execute").click()
                cell = block.locator(".live-responses-table tbody .response-col_status").first
                cell.wait_for(timeout=15_000)
                assert cell.inner_text().strip() == str(status), operation
            page.screenshot(path=str(ARTIFACTS / f"apidocs-{scheme}.png"), full_page=False)
        finally:
            page.close()
        assert refused == []

    session(
        "bearer",
        token,
        [
            ("CatalogService-CatalogService_ListProducts", {}, 200),
            ("CreditService-CreditService_GetBalance", {"type": "api_calls"}, 200),
        ],
    )
    session(
        "x-api-key",
        SERVICE_KEY,
        [
            (
                "TokenService-TokenService_IssueToken",
                {"body": '{"principal_id": "docs-user-2", "scopes": ["checkout"]}'},
                200,
            ),
            ("UsageService-UsageService_DeleteMetric", {"code": "nope", "request_id": "d-1"}, 404),
        ],
    )


def _examples() -> int:
    return 100 if os.environ.get("BILLING_SOAK") == "1" else 10


SCOPES = ["checkout", "portal", "payments", "billing:read", "credits:read", "usage:read"]
# Credentials by security scheme, so that schemathesis knows them (ignored_auth removes and
# spoils them; headers given with -H it could not take away).
AUTH_CONFIG = """
[auth.openapi.serviceKey]
api_key = "${TOLLBOOTH_TEST_SERVICE_KEY}"
[auth.openapi.bearer]
bearer = "${TOLLBOOTH_TEST_BEARER}"
"""


@pytest.mark.soak
@pytest.mark.timeout(1200)  # make soak adds two phases: several minutes
def test_schemathesis_through_envoy_every_check_positive_and_negative(stack, tmp_path):  # type: ignore[no-untyped-def]
    """Schemathesis' own command line as an outside tester runs it: every check (server errors,
    status codes, content types, response schemas and headers, positive data accepted,
    negative data refused, ignored auth, missing required headers, undeclared methods, use
    after free, resource availability), both generation modes, every operation. Three checks
    are replaced by a version that lets through only what no document can describe
    (tests/gateway/schemathesis_hooks.py says which, and why).

    CI runs the fuzzing phase at `_examples()` per operation with a fixed seed, one worker (the
    same requests in the same order each run: what one operation leaves, such as an archived
    account, meets the next the same way); `make soak` (BILLING_SOAK=1) adds the coverage
    phase (boundary values of every parameter, undeclared methods: about a minute more) and the
    stateful phase (links between operations, on the ids the server answers), with two workers
    and a random seed."""
    soak = os.environ.get("BILLING_SOAK") == "1"
    token = stack.request(
        "POST", "/mgt/v1/token/issue", {"principal_id": "st-every-check", "scopes": SCOPES}, SERVICE
    )
    assert token.status == 200, token.body
    config = tmp_path / "schemathesis.toml"
    config.write_text(AUTH_CONFIG)
    replaced = ["not_a_server_error", "positive_data_acceptance", "negative_data_rejection"]
    replaced.append("unsupported_method")
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        f"{stack.rest_url}/api/openapi.json",
        "--url",
        stack.rest_url,
        "--checks",
        "all",
        "--exclude-checks",
        ",".join(replaced),
        "--mode",
        "all",
        "--max-examples",
        str(_examples()),
        "--phases",
        "examples,coverage,fuzzing,stateful" if soak else "examples,fuzzing",
        "--workers",
        "2" if soak else "1",
        "--no-color",
        "--suppress-health-check",
        "all",
        *([] if soak else ["--seed", "20261207"]),
    ]
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.gateway.schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join(str(root / p) for p in ("", "server", "clients")),
        "TOLLBOOTH_TEST_SERVICE_KEY": SERVICE_KEY,
        "TOLLBOOTH_TEST_BEARER": token.json()["access_token"],
    }
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800
    )
    out = run.stdout + run.stderr
    code = run.returncode
    assert code == 0, _failures(out)
    tested = re.search(r"Tested: (\d+)", out)
    assert tested and int(tested.group(1)) >= 70, out[-3000:]  # every operation, not a few


def _failures(out: str) -> str:
    """The FAILURES section of schemathesis' report (its reproducing curl commands), cut."""
    section = out.split("FAILURES", 1)[-1].split("SUMMARY", 1)
    return (section[0][:12000] + "\n...\n" + section[-1][:3000]) if section else out[-8000:]


def _template(path: str) -> str:
    """A binding's URL template as the document spells it ({a.b=x/*} -> {a_b})."""
    return re.sub(
        r"\{([^}=]+)(=[^}]*)?\}", lambda m: "{" + m.group(1).replace(".", "_") + "}", path
    )


def test_no_request_body_schema_offers_what_the_url_binds() -> None:
    """The URL decides (a body naming a path-bound field is 400 MALFORMED_REQUEST), so no body
    schema lists one: the interactive page's example body would be refused otherwise."""
    doc = json.loads(OPENAPI.read_text())
    checked = 0
    for path, ops in doc["paths"].items():
        for verb, op in ops.items():
            body = op.get("requestBody")
            bound = [p for p in op.get("parameters", []) if p["in"] == "path"]
            if body is None or not bound:
                continue
            schema = body["content"]["application/json"]["schema"]
            if "$ref" in schema:
                schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
            for param in bound:
                # `product_product_id` for `{product.product_id}` with body `product`
                named = param.get("description", f"`{param['name']}`").strip("`.").split("`")[-1]
                leaf = named.rsplit(".", 1)[-1] if "." in named else param["name"]
                assert leaf not in schema.get("properties", {}), (verb, path, leaf)
            checked += 1
    assert checked >= 15, checked


def test_the_free_plan_billing_status_with_its_nulls_matches_the_document(stack):  # type: ignore[no-untyped-def]
    """Seed 002's free-tier body prints `status` and `current_period_end` as null (the
    gateway's x-billing-json-null): the document's BillingStatus says they may be null."""
    from jsonschema import Draft202012Validator

    document = stack.request("GET", "/api/openapi.json").json()
    issued = stack.request(
        "POST",
        "/mgt/v1/token/issue",
        {"principal_id": "docs-free-plan", "user_id": "u", "scopes": ["billing:read"]},
        SERVICE,
    )
    assert issued.status == 200, issued.body
    token = issued.json()["access_token"]
    got = stack.request("GET", "/api/v1/billing", None, {"authorization": f"Bearer {token}"})
    assert got.status == 200, got.body
    body = got.json()
    nulls = [name for name, value in body.items() if value is None]
    assert nulls, body  # the free plan's nulls are what this checks
    schema = {"$ref": "#/components/schemas/BillingStatus", "components": document["components"]}
    errors = list(Draft202012Validator(schema).iter_errors(body))
    assert errors == [], [e.message for e in errors]
