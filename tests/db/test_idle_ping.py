"""Pooled PostgreSQL connections are pinged only after sitting idle (tollbooth.db): one that
PostgreSQL closed meanwhile is replaced before a transaction uses it."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from tollbooth.db import PING_IDLE_SEC, Database


@pytest.mark.postgres
def test_a_connection_closed_by_the_server_while_idle_is_replaced(pg_url: str) -> None:
    db, admin = Database(pg_url, pool_size=1, max_overflow=0), Database(pg_url)
    try:
        with db.transaction() as session:
            before = session.execute(text("SELECT pg_backend_pid()")).scalar()
        with admin.transaction() as session:
            assert session.execute(text("SELECT pg_terminate_backend(:p)"), {"p": before}).scalar()
        time.sleep(PING_IDLE_SEC + 0.2)  # let the pooled connection count as idle
        for readonly in (False, True):
            with db.transaction(readonly=readonly) as session:
                after = session.execute(text("SELECT pg_backend_pid()")).scalar()
            assert after != before
    finally:
        db.dispose()
        admin.dispose()
