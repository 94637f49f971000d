"""Python client for the Tollbooth billing API (gRPC).

A thin layer over the generated `billing.v1` stubs that adds what every caller otherwise
re-implements, differently each time: credentials, deadlines, idempotency keys, safe retries
and readable errors.
"""

from tollbooth_client.client import BillingClient
from tollbooth_client.errors import BillingError

__all__ = ["BillingClient", "BillingError"]
