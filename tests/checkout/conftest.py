"""A checkout world per test, on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.checkout.support import World, start_world


@pytest.fixture
def world(database_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    w = start_world(database_url, tmp_path)
    yield w
    w.stop()


@pytest.fixture
def sqlite_world(tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    from tests.devstack import migrated_sqlite

    w = start_world(migrated_sqlite(tmp_path / "billing.db"), tmp_path)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def shop(tmp_path_factory):  # type: ignore[no-untyped-def]
    """The REST surface: server, sidecar and a real Envoy on SQLite, plus the sandbox
    delivering its signed events to Envoy's webhook path (as `make run` wires them)."""
    from tests.checkout.support import Shop, start_shop

    s: Shop = start_shop(tmp_path_factory.mktemp("shop"))
    yield s
    s.close()
