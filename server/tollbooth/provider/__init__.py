"""The payment provider: the Stripe client, idempotency keys, catalog sync and reconcile."""
