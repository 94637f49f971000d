"""Payment intents: one-time payments through the caller's own payment form (seed 003)."""
