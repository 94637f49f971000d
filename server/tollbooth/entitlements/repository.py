"""What the entitlements room reads: an account's holdings with what each held price and its
product grant, from the process's in-memory holdings (`tollbooth.subscriptions.holdings`),
else one statement."""

from __future__ import annotations

from tollbooth.entitlements.grants import HeldPrice
from tollbooth.subscriptions.holdings import AccountHoldings


def held_prices(holdings: AccountHoldings) -> list[HeldPrice]:
    """Every holding of the account with the entitlements of its price and product."""
    return [
        HeldPrice(row.holding, row.price_entitlements, row.product_entitlements)
        for row in holdings.held
    ]
