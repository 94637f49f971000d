"""The opt-in answer cache of CheckEntitlement: a kept answer keeps its as_of."""

from __future__ import annotations

from pathlib import Path

from tests.checkout.support import start_world
from tests.entitlements.support import E, bought, check, events, metric
from tollbooth.entitlements.cache import AnswerCache


def test_an_answer_is_kept_for_the_ttl_then_computed_again():
    now = [100.0]
    computed: list[int] = []

    def compute() -> int:
        computed.append(1)
        return len(computed)

    cache: AnswerCache[int] = AnswerCache(2.0, clock=lambda: now[0])
    assert cache.get("k", compute) == 1
    now[0] = 101.9
    assert cache.get("k", compute) == 1  # kept
    assert cache.get("other", compute) == 2  # another key is its own question
    now[0] = 102.0
    assert cache.get("k", compute) == 3  # expired


def test_ttl_zero_always_computes():
    cache: AnswerCache[int] = AnswerCache(0)
    values = iter(range(10))
    assert [cache.get("k", lambda: next(values)) for _ in range(3)] == [0, 1, 2]


def test_a_cached_metered_answer_says_when_it_was_computed(database_url: str, tmp_path: Path):
    world = start_world(database_url, tmp_path, BILLING_ENTITLEMENT_CACHE_MS="60000")
    try:
        metric(world, "api_calls", "api.call")
        world.price("pro", entitlements=[E(feature="calls", metric="api_calls", limit="5")])
        token, account = world.token()
        bought(world, token, "pro")
        first = check(world, "calls", token=token)
        events(world, account, "api.call", 2)
        again = check(world, "calls", token=token)
        # The kept answer: the same figures and the same as_of, older than the new events.
        assert (
            (again.used, again.as_of_time)
            == (first.used, first.as_of_time)
            == ("0", first.as_of_time)
        )
        # A service caller's question is another question: computed now, counting them.
        assert check(world, "calls", account=account).used == "2"
    finally:
        world.stop()
