"""`make run`'s SQLite file holds secrets (each notification endpoint's signing secret, which
is shown once), so it is created readable by its owner only, as the generated credentials in
`<data dir>/secrets/` are (0600): it was 0644 under the usual umask, in a world-readable data
directory. SQLite gives its WAL and shared-memory files the database file's mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import text

from tollbooth.db import make_engine


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_sqlite_database_and_its_wal_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual one, whatever the test runner's
    try:
        db = tmp_path / "data" / "billing.db"
        engine = make_engine(f"sqlite:///{db}")
        try:
            with engine.begin() as conn:
                conn.execute(text("CREATE TABLE t (x TEXT)"))
                conn.execute(text("INSERT INTO t VALUES ('whsec_secret')"))
            assert _mode(db) == 0o600
            wal = Path(f"{db}-wal")
            assert wal.exists() and _mode(wal) == 0o600
        finally:
            engine.dispose()
    finally:
        os.umask(old)


def test_an_existing_sqlite_file_keeps_the_mode_its_owner_gave_it(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    db.touch()
    db.chmod(0o640)
    engine = make_engine(f"sqlite:///{db}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x TEXT)"))
    finally:
        engine.dispose()
    assert _mode(db) == 0o640
