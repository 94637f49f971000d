"""`as_of` of a kept account's holdings (tollbooth.subscriptions.holdings): every change
committed before it is in the answer, even when the reader is descheduled between taking the
entry and reading the listener's `vouched` time while the listener hears a change to the
account and vouches past it (the GIL makes that pause any length)."""

from __future__ import annotations

import pytest

from tests.catalog.support import SLACK_SEC, poll
from tests.entitlements.test_holdings import _features, _purchase, _seed, _warm
from tollbooth.db import Database
from tollbooth.db.types import utcnow
from tollbooth.subscriptions.holdings import BOUND_SEC, AccountHoldings, Holdings

pytestmark = pytest.mark.postgres


def _held_features(held: AccountHoldings) -> set[str]:
    return {e["feature"] for row in held.held for e in row.price_entitlements}


def test_a_kept_entry_taken_before_a_change_was_heard_never_claims_it(pg_url: str) -> None:
    db, other = Database(pg_url), Database(pg_url)
    kept = Holdings(db)
    try:
        account, once, _ = _seed(other)
        assert _features(kept, db, account) == set()
        assert poll(lambda: _warm(kept, db, account), BOUND_SEC + SLACK_SEC)
        listener = kept._subscription.listener
        committed: list = []

        class Paused(dict):  # type: ignore[type-arg]
            """The reader pauses right after taking the entry: meanwhile another process
            buys, and this process's listener hears it and vouches past its commit."""

            def get(self, key, default=None):  # type: ignore[no-untyped-def]
                found = super().get(key, default)
                if not committed:
                    with other.transaction() as session:
                        _purchase(session, account, once)
                    committed.append(utcnow())
                    assert poll(lambda: listener.vouched > committed[0], BOUND_SEC + SLACK_SEC)
                return found

        kept._entries = Paused(kept._entries)
        held = kept.cached(account)
        assert committed
        # Either the answer says it predates the purchase, or it holds the purchase.
        assert held is None or held.as_of < committed[0] or "gold" in _held_features(held), (
            held.as_of,
            committed[0],
        )
    finally:
        kept.close()
        db.dispose()
        other.dispose()
