"""How the provider's answers reach us (`tollbooth.provider.client` makes the calls):

- the library's HTTP client, retrying only when nothing came back, refusing to run inside a
  database transaction, and sized to what is left of the RPC's time (`tollbooth.deadline`);
- a Stripe error mapped to a domain error with a stable reason (the client module's docstring
  lists them), and a 2xx answer checked to be a Stripe object before anything acts on it.
"""

from __future__ import annotations

import logging
from typing import TypeVar

import stripe

from tollbooth import deadline, errors
from tollbooth.db import no_transaction_held
from tollbooth.errors import DomainError, Kind

log = logging.getLogger("tollbooth.provider")

T = TypeVar("T")

# The reason of the provider's refusal of a request (a 4xx: nothing was created there).
REFUSED = "PROVIDER_REQUEST_INVALID"


# How often a request meeting Stripe's 409 `idempotency_key_in_use` is sent again (the library's
# backoff: 0.5 s doubling, at most its maximum delay, and never past the RPC's time).
IN_PROGRESS_RETRIES = 6


class NetworkRetriesOnly(stripe.RequestsClient):
    """The library also retries 5xx answers; we retry only when nothing came back, or on a 409
    (a request with the same idempotency key still in progress at Stripe).
    Every request first checks that this thread holds no database transaction open. Inside an
    RPC's time budget (`tollbooth.deadline`) a request waits at most what is left of it, and
    none is started or retried once it is spent."""

    @property  # type: ignore[override]
    def _timeout(self) -> float:  # the library reads it for each request
        left = deadline.remaining()
        return self._configured if left is None else max(0.05, min(self._configured, left))

    @_timeout.setter
    def _timeout(self, value: float) -> None:
        self._configured = value

    def request(self, method, url, headers, post_data=None):  # type: ignore[no-untyped-def, override]
        no_transaction_held("the payment provider")
        if deadline.remaining() == 0:
            raise _out_of_time()
        return super().request(method, url, headers, post_data)

    def _should_retry(  # type: ignore[no-untyped-def, override]
        self, response, api_connection_error, num_retries, max_network_retries
    ):
        # A 409 is Stripe's `idempotency_key_in_use`: a request with the same key is still in
        # progress (a client's retry racing its first attempt, two replicas completing one
        # intent); retried a little later, it gets that request's answer.
        if response is not None and response[1] != 409:
            return False
        left = deadline.remaining()
        if left is not None and left <= self._sleep_time_seconds(num_retries + 1):
            return False
        if response is not None:  # the other request (a burst's first customer create, say)
            # may take seconds under load: waited for up to IN_PROGRESS_RETRIES times, backing
            # off, within the RPC's time, whatever the network retries configured.
            return num_retries < max(max_network_retries, IN_PROGRESS_RETRIES)
        return super()._should_retry(
            response, api_connection_error, num_retries, max_network_retries
        )


def _out_of_time() -> DomainError:
    return unavailable(
        "the payment provider did not answer within this request's time; retry with the same"
        " request_id"
    )


def unavailable(message: str) -> DomainError:
    return DomainError(Kind.UNAVAILABLE, "PROVIDER_UNAVAILABLE", message)


def stripe_answer(exc: stripe.StripeError) -> bool:
    """Whether the error came from Stripe's own error object (`{"error": {...}}`): a 429
    without it, an HTML page from a proxy or load balancer, a body that is not JSON came from
    something in front of Stripe, whatever its status."""
    body = getattr(exc, "json_body", None)
    return isinstance(body, dict) and isinstance(body.get("error"), dict)


def failure_replayed(exc: stripe.StripeError) -> bool:
    """Whether Stripe answered a 5xx it saved under the idempotency key (`Idempotent-Replayed:
    true`): a request with the key began and failed before, and Stripe gives every request with
    that key the same failure while the key lives (24 h), so sending it again never helps."""
    status = getattr(exc, "http_status", None)
    if status is None or status < 500 or not stripe_answer(exc):
        return False
    headers = getattr(exc, "headers", None) or {}
    return any(
        str(name).lower() == "idempotent-replayed" and str(value).lower() == "true"
        for name, value in dict(headers).items()
    )


def not_stripe(what: str, status: object) -> DomainError:
    # The answer itself is never shown (an HTML page, another service's JSON): logged short.
    log.warning(
        "the payment provider answered %s with a non-Stripe response (HTTP %s)", what, status
    )
    return unavailable(f"the payment provider sent an unreadable answer ({what}); retry")


def map_error(exc: stripe.StripeError, what: str) -> DomainError:
    status = getattr(exc, "http_status", None)
    if isinstance(exc, stripe.APIConnectionError):
        if deadline.remaining() == 0:
            return _out_of_time()
        return unavailable(f"the payment provider could not be reached ({what}); retry")
    if not stripe_answer(exc):
        return not_stripe(what, status)
    if isinstance(exc, stripe.RateLimitError) or (status is not None and status >= 500):
        return unavailable(f"the payment provider is unavailable ({what}); retry")
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        log.error("the payment provider refused our credentials (%s): check STRIPE_API_KEY", what)
        return unavailable(f"the payment provider refused this service's credentials ({what})")
    if status == 409:
        # Another request with the same key is still in progress at Stripe (a retry racing
        # its first attempt, two replicas completing one intent): not a refusal (nothing may
        # be withdrawn for it); retrying gets that request's answer. The library raises a 409
        # as APIError whatever its type.
        return unavailable(
            f"the same request is in progress at the payment provider ({what}); retry with the"
            " same request_id"
        )
    if isinstance(exc, stripe.IdempotencyError):
        return errors.invalid(
            "request_id was already used with different parameters",
            reason="IDEMPOTENCY_KEY_REUSED",
            field="request_id",
        )
    message = str(exc.user_message or "").strip()
    param = getattr(exc, "param", None)
    return errors.invalid(
        f"the payment provider refused the request ({what})"
        + (f": {errors.shown(message, 200)}" if message else ""),
        reason=REFUSED,
        **({"param": param} if param else {}),
    )


def checked(result: T, what: str) -> T:
    """A 2xx answer that is a Stripe object (a JSON object naming its `object`), else
    UNAVAILABLE: `[]`, `null` or another service's JSON is not an answer to act on."""
    if not (
        isinstance(result, stripe.StripeObject)
        and "object" in result
        and isinstance(result["object"], str)
    ):
        raise not_stripe(what, 200)
    return result
