"""The time an RPC's provider calls may take: the caller's deadline less a margin, capped.

A gRPC caller that gives up at its deadline never hears the answer, and its worker thread
keeps waiting on Stripe (up to the client's timeout per attempt, times its retries). So an RPC
sets a budget when it starts (`budget`, from the server's error interceptor): the caller's
remaining time less a margin for the answer (`MARGIN_SEC`, or a quarter of that time when the
caller gave less than four seconds: a whole second off a 0.9 s deadline left nothing, and
every such call was refused without asking the provider), at most the configured cap
(`STRIPE_RPC_BUDGET_SEC`; a REST call through Envoy carries no deadline, and the cap keeps it
under Envoy's route timeout). The provider client sizes each request's timeout to what is left
(`remaining`) and neither starts a request nor retries once it is spent: the RPC answers
UNAVAILABLE `PROVIDER_UNAVAILABLE` while the caller still listens, and its retry under the same
request_id finds what was made.

Applying a Stripe event is `exempt`: it has its own lease, attempts and retries, and cutting
its re-fetch short would only fail it for the worker to apply again.

A context variable, so each RPC's thread sees its own budget (work handed to another thread
runs without one: the client's own per-request timeout still holds).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

MARGIN_SEC = 1.0
# A caller with less than 4 * MARGIN_SEC left keeps this share of it for the answer.
MARGIN_SHARE = 0.25

# The monotonic time by which provider work must be done; None: no budget (the client's own
# per-request timeout and retries apply).
_until: ContextVar[float | None] = ContextVar("tollbooth_provider_deadline", default=None)


@contextmanager
def budget(time_remaining: float | None, cap_sec: float) -> Iterator[None]:
    """Provider calls in this block end within the caller's `time_remaining` (seconds, None
    when the caller set no deadline) less its margin, and within `cap_sec`."""
    if time_remaining is None:
        seconds = cap_sec
    else:
        margin = min(MARGIN_SEC, time_remaining * MARGIN_SHARE)
        seconds = min(cap_sec, time_remaining - margin)
    token = _until.set(time.monotonic() + max(0.0, seconds))
    try:
        yield
    finally:
        _until.reset(token)


@contextmanager
def exempt() -> Iterator[None]:
    """No budget in this block (applying a webhook)."""
    token = _until.set(None)
    try:
        yield
    finally:
        _until.reset(token)


def remaining() -> float | None:
    """Seconds left of the current budget (0 once spent); None when there is none."""
    until = _until.get()
    return None if until is None else max(0.0, until - time.monotonic())
