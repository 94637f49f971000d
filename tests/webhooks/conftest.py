"""Checkout worlds for the webhook finalisation tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.checkout.conftest import sqlite_world, world  # noqa: F401 - fixtures
from tests.checkout.support import World, start_world


@pytest.fixture
def pg_world(pg_url: str, tmp_path: Path) -> Iterator[World]:
    """A world on PostgreSQL whose events are handed over by the test (no delivery)."""
    w = start_world(pg_url, tmp_path, deliver=False)
    yield w
    w.stop()


@pytest.fixture
def quiet(database_url: str, tmp_path: Path) -> Iterator[World]:
    """A world whose sandbox keeps its events instead of delivering them (the test hands them
    over, in the order it chooses); on the database `database_url` names."""
    w = start_world(database_url, tmp_path, deliver=False)
    yield w
    w.stop()
