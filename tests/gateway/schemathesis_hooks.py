"""Schemathesis hooks for tests/gateway/test_openapi.py (SCHEMATHESIS_HOOKS names this module).

Every check runs, in both modes. Four built-in checks are replaced by a version that lets
through, and only through, what no OpenAPI document can describe (each case named below);
everything else they report still fails the run:

- not_a_server_error: this stack runs no Stripe (nor its sandbox), so a call that needs the
  provider is 503 PROVIDER_UNAVAILABLE, a dependency down, which README allows.
- positive_data_acceptance: a request the document calls valid may still be refused for the
  state it meets, not its shape: FAILED_PRECONDITION (gRPC code 9, a grant already voided, a
  reservation already committed), a page token that was never issued (it is signed), a
  request_id reused with other parameters, an account archived, never billed or unknown,
  credits short, a price whose identity never changes; for the clock (an event too old, an
  expiry not in the future); or for a rule between two fields (an end after its start, a
  replay naming one event or all failed ones, seed 001's twin fields that must agree, a
  metric's property and credit burn its aggregation allows, an entitlement's fields its kind
  needs, a credit grant on purchase or renewal, a recurring price's interval, a payment
  intent's amount and currency unless a price gives them, a price's or payment intent's amount
  against its currency's rules (tollbooth.currencies: in a three-decimal currency its last
  digit 0, in isk whole kronur, a payment at least the provider's minimum charge in its
  currency), checkout items unless the operator set a default, a REQUIRED field an update mask
  names). Those 400s are named by reason (and field); any other 400 is still a failure.
- negative_data_rejection: `POST /mgt/v1/events:batch` answers per event (README: one bad event
  does not sink the batch), so a batch with an invalid event is a 200 whose result for it is
  EVENT_STATUS_REJECTED; that is its refusal.
- unsupported_method: Envoy refuses a `QUERY` (an HTTP method still a draft) sent without a
  Content-Type with its own 400 before any route or filter runs (`query_missing_content_type`),
  so no `Allow` can be computed for it; every other method a path does not take, `FOO` and a
  `QUERY` with a Content-Type included, is 405 with `Allow`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
    unsupported_method,
)

# Refusals that depend on the state or the clock a request meets.
STATE_REASONS = frozenset(
    {
        "PAGE_TOKEN_INVALID",
        "IDEMPOTENCY_KEY_REUSED",
        "ACCOUNT_ARCHIVED",
        "ACCOUNT_NOT_BILLED",
        "ACCOUNT_UNKNOWN",
        "INSUFFICIENT_CREDITS",
        "PRICE_IMMUTABLE",
        "PRICE_NOT_FOUND",  # a catalog price named in a body that no price is (yet)
        "CHECKOUT_AMOUNT_INVALID",  # the items' unit amounts (the catalog's) x quantities, summed
        # A bearer token's URL on an origin BILLING_REDIRECT_ORIGINS allows (configuration);
        # the service key's may be on any, but is still an absolute http(s) URL.
        "REDIRECT_URL_NOT_ALLOWED",
        "STRIPE_LINK_NOT_FOUND",  # a Stripe id Stripe does not know
        "EVENT_TIMESTAMP_TOO_OLD",
        "EVENT_TIMESTAMP_IN_FUTURE",
        "REPLAY_TARGET_REQUIRED",
        "FAILED_PRECONDITION",
    }
)


# (reason, field): a rule between two fields, or against the clock.
RELATIVE = frozenset(
    {
        ("INVALID_ARGUMENT", "end_time"),  # after start_time
        ("INVALID_ARGUMENT", "expire_time"),  # in the future
        ("FIELD_INVALID", "since"),  # not in the future
        ("FIELD_REQUIRED", "metric.property"),  # for the aggregations that read one
        ("INVALID_ARGUMENT", "price.recurring"),  # a one-time price has none
        ("INVALID_ARGUMENT", "alias"),  # never changes once set
        ("FIELD_REQUIRED", "items"),  # unless the operator configured a default offer
        ("FIELD_REQUIRED", "currency"),  # a payment intent's, unless a price gives it
        # Given unless a price does; at least the currency's minimum charge; in bhd, jod, kwd,
        # omr, tnd ending in 0; in isk whole kronur (divisible by 100).
        ("PAYMENT_AMOUNT_INVALID", "amount"),
        ("PRICE_AMOUNT_INVALID", "price.unit_amount"),  # bhd...tnd: ends in 0; isk: 100s
        ("FIELD_INVALID", "pass_through_token"),  # seed 001's twin of client_reference: equal
        ("FIELD_INVALID", "account_email"),  # seed 001's twin of customer_email: equal
        ("INVALID_ARGUMENT", "metric.property"),  # only for the aggregations that read one
        ("FIELD_INVALID", "account_id"),  # seed 001's twin of account: the same account
        ("FIELD_REQUIRED", "price.recurring.interval"),  # for a recurring price only
        ("INVALID_ARGUMENT", "price.recurring.interval_count"),  # its bound is its interval's
        ("FIELD_INVALID", "metric.credit_burn"),  # for a count or a sum only
    }
)
# An entitlement's fields depend on its kind (a metered one names its credit type...).
KIND_FIELD = re.compile(r"entitlements\[\d+\]\.")
# ... and one is either metered or credit-backed, never both (refused naming the entitlement).
KIND_ITEM = re.compile(r"entitlements\[\d+\]$")
# A price's credit grant grants on purchase, on renewal or both (two booleans, one true), and
# on renewal only when the price recurs (`recurring`, another field of the price).
GRANT_ITEM = re.compile(r"credit_grants\[\d+\](\.on_renewal)?$")


def _error(response: Any) -> tuple[int | None, str | None, str | None]:
    """(gRPC code, reason, metadata.field) of an error body."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return None, None, None
    if not isinstance(body, dict):
        return None, None, None
    for detail in body.get("details", []):
        if isinstance(detail, dict) and detail.get("@type", "").endswith("ErrorInfo"):
            field = (detail.get("metadata") or {}).get("field")
            return body.get("code"), str(detail.get("reason")), field
    return body.get("code"), None, None


def _reason(response: Any) -> str | None:
    return _error(response)[1]


@schemathesis.check
def not_a_server_error_but_the_missing_provider(ctx, response, case):  # type: ignore[no-untyped-def]
    if response.status_code == 503 and _reason(response) == "PROVIDER_UNAVAILABLE":
        return None
    return not_a_server_error(ctx, response, case)


@schemathesis.check
def positive_data_acceptance_but_state(ctx, response, case):  # type: ignore[no-untyped-def]
    code, reason, field = _error(response)
    # FAILED_PRECONDITION (9) is the state a request meets, by definition (AIP-193).
    if response.status_code == 400 and (
        code == 9
        or reason in STATE_REASONS
        or (reason, field) in RELATIVE
        or (reason == "FIELD_REQUIRED" and KIND_FIELD.search(field or ""))
        or (reason == "INVALID_ARGUMENT" and KIND_ITEM.search(field or ""))
        or (reason == "INVALID_ARGUMENT" and GRANT_ITEM.search(field or ""))
    ):
        return None
    # A mask naming a REQUIRED field (or `*`, every mutable one: AIP-134) sets it to what the
    # body holds, so it must be given then, though the partial body may leave it out.
    mask = str((case.query or {}).get("update_mask", ""))
    named = {p.strip() for p in mask.split(",")}
    leaf = (field or "").rsplit(".", 1)[-1]
    if (
        response.status_code == 400
        and reason == "FIELD_REQUIRED"
        and ("*" in named or leaf in named)
    ):
        return None
    return positive_data_acceptance(ctx, response, case)


@schemathesis.check
def unsupported_method_but_query_without_content_type(ctx, response, case):  # type: ignore[no-untyped-def]
    request = response.request
    if (
        request.method == "QUERY"
        and "content-type" not in {k.lower() for k in request.headers}
        and response.status_code == 400
        and _reason(response) == "MALFORMED_REQUEST"
    ):
        return None
    return unsupported_method(ctx, response, case)


@schemathesis.check
def negative_data_rejection_but_per_event(ctx, response, case):  # type: ignore[no-untyped-def]
    if case.operation.path == "/mgt/v1/events:batch" and response.status_code == 200:
        results = json.loads(response.content).get("results", [])
        if any(r.get("status") == "EVENT_STATUS_REJECTED" for r in results):
            return None
    return negative_data_rejection(ctx, response, case)
