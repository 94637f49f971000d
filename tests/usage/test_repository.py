"""The insert paths of usage.repository on both databases: exact timestamps, insert-first."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from tollbooth.db import Database
from tollbooth.db.models import UsageEvent
from tollbooth.usage import repository
from tollbooth.usage.events import EPOCH, MAX_SECONDS, MIN_SECONDS

# Both ends of google.protobuf.Timestamp, around the epoch, and ordinary times.
MOMENTS = [
    (MIN_SECONDS, 0),
    (MIN_SECONDS + 1, 999_999),
    (-1, 999_999),
    (0, 0),
    (1_741_532_597, 123_456),
    (1_795_315_633, 1),
    (MAX_SECONDS, 999_999),
]


def rows(prefix: str) -> list[repository.Row]:
    return [(f"{prefix}{i:02d}", "acct_x", "n", s, us, "{}") for i, (s, us) in enumerate(MOMENTS)]


@pytest.mark.parametrize("copies", [1, 3], ids=["values", "staging"])
def test_timestamps_are_stored_exactly_across_the_whole_range(db: Database, copies: int) -> None:
    # 7 rows take one VALUES statement; 21 rows (3 copies) go through COPY on PostgreSQL.
    batch = [r for k in range(copies) for r in rows(f"k{k}-")]
    assert len(batch) > repository.SMALL_BATCH or copies == 1
    received = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with db.transaction() as session:
        inserted = repository.insert_events(session, batch, received)
    assert inserted == {(r[1], r[0]) for r in batch}
    with db.transaction(readonly=True) as session:
        stored = dict(session.execute(select(UsageEvent.unique_id, UsageEvent.occurred_at)).all())
    for uid, _, _, s, us, _ in batch:
        assert stored[uid] == EPOCH + dt.timedelta(seconds=s, microseconds=us), uid


def test_insert_returns_only_the_keys_it_inserted(db: Database) -> None:
    received = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with db.transaction() as session:
        repository.insert_events(session, rows("a")[:3], received)
    with db.transaction() as session:
        again = repository.insert_events(session, rows("a"), received)
    assert again == {("acct_x", r[0]) for r in rows("a")[3:]}


@pytest.mark.parametrize("copies", [1, 3], ids=["values", "staging"])
def test_one_id_for_another_account_is_another_row(db: Database, copies: int) -> None:
    # The key is (account, unique id): the same ids for acct_y are new, for acct_x are not.
    received = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    batch = [r for k in range(copies) for r in rows(f"k{k}-")]
    with db.transaction() as session:
        repository.insert_events(session, batch, received)
    other = [(uid, "acct_y", n, s, us, p) for uid, _, n, s, us, p in batch]
    with db.transaction() as session:
        inserted = repository.insert_events(session, [*batch, *other], received)
        assert inserted == {("acct_y", r[0]) for r in batch}
        keys = [(r[1], r[0]) for r in (*batch, *other)] + [("acct_z", "k0-00")]
        assert repository.stored_among(session, keys) == set(keys[:-1])
