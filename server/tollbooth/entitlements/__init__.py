"""Entitlements: what an account may do now, from what its live subscriptions and purchases
grant (the `entitlements` of their prices and products)."""
