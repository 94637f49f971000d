"""Fixtures of the checkout world, reused: a world per test (SQLite, then PostgreSQL)."""

from tests.checkout.conftest import world  # noqa: F401
