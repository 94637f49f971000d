"""What a Stripe test-mode account does: the resources, their transitions and their events.

The engine is built in layers, one module per domain, each allowed to use the ones below it:
core (clocks, events, lookups, rendering, lists) < payments < disputes < customers < catalog <
billing (subscriptions, invoices, renewals) < subscription_updates < checkout < billing_portal <
clocks (test clocks).

Every public method runs inside one store transaction (the caller opens it). Objects are kept
in Stripe's shape; keys starting with `_` are private state and never leave the sandbox.
"""

from __future__ import annotations

from tollbooth.sandbox.clocks import Clocks
from tollbooth.sandbox.core import DEFAULT_CLOCK, strip_private

__all__ = ["DEFAULT_CLOCK", "Engine", "strip_private"]


class Engine(Clocks):
    """The whole sandbox account."""
