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
