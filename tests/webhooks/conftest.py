"""Checkout worlds for the webhook finalisation tests."""

from tests.checkout.conftest import sqlite_world, world  # noqa: F401 - fixtures
