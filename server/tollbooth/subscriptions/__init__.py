"""Subscriptions: subscription state, purchases, billing status and purchase hints."""
