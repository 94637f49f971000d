"""Billing accounts: the immutable principal_id -> billing_account_id mapping."""
