"""Group commit for streams: groups by size and by time, errors after the groups before them."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import pytest

from tollbooth.usage.batcher import Grouper, SharedCommit

_END = object()


def fed(q: queue.Queue) -> Iterator[object]:
    """A source that yields what the test puts in `q`, like a client sending messages."""
    while True:
        item = q.get(timeout=10)
        if item is _END:
            return
        if isinstance(item, Exception):
            raise item
        yield item


def test_a_burst_is_cut_at_the_maximum_weight() -> None:
    groups = list(Grouper(iter(range(10)), max_weight=4, wait=5.0).groups())
    assert groups == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_weights_count_events_and_an_item_is_never_split() -> None:
    items = [3, 3, 1, 5, 2]
    groups = list(Grouper(iter(items), max_weight=4, wait=5.0, weight=lambda w: w).groups())
    assert groups == [[3], [3, 1], [5], [2]]


def test_a_slow_sender_gets_its_group_after_the_wait_without_ending_the_stream() -> None:
    q: queue.Queue = queue.Queue()
    grouper = Grouper(fed(q), max_weight=100, wait=0.02)
    groups = grouper.groups()
    q.put("a")
    started = time.monotonic()
    assert next(groups) == ["a"]  # the stream is still open: the wait released it
    assert time.monotonic() - started < 5
    q.put("b")
    q.put("c")
    assert next(groups) in (["b", "c"], ["b"])
    q.put(_END)
    rest = [x for g in groups for x in g]
    assert rest in ([], ["c"])


def test_a_source_error_comes_after_the_items_before_it() -> None:
    q: queue.Queue = queue.Queue()
    for item in ("a", "b", ValueError("broken stream")):
        q.put(item)
    groups = Grouper(fed(q), max_weight=10, wait=0.05).groups()
    seen = []
    with pytest.raises(ValueError, match="broken stream"):
        for group in groups:
            seen.extend(group)
    assert seen == ["a", "b"]


def test_an_empty_stream_gives_no_group() -> None:
    assert list(Grouper(iter([]), max_weight=10, wait=0.01).groups()) == []


# -- SharedCommit: group commit across streams ------------------------------------------------


class _Held:
    """A commit function that records each call and holds the first until released."""

    def __init__(self, fail_on: str = "") -> None:
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, groups: list[str]) -> list[str]:
        self.calls.append(list(groups))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(10)
        if self.fail_on in groups:
            raise RuntimeError(f"commit failed with {self.fail_on}")
        return [f"done:{g}" for g in groups]


def _submit_in_thread(shared: SharedCommit, group: str, out: dict) -> threading.Thread:
    def run() -> None:
        try:
            out[group] = shared.submit(group)
        except RuntimeError as exc:
            out[group] = exc

    t = threading.Thread(target=run)
    t.start()
    return t


def _wait_pending(shared: SharedCommit, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(shared._pending) < n:
        assert time.monotonic() < deadline, "submitters never queued"
        time.sleep(0.001)


def test_a_lone_group_is_committed_on_its_own() -> None:
    commit = _Held()
    commit.release.set()
    shared = SharedCommit(commit)
    assert shared.submit("a") == "done:a"
    assert shared.submit("b") == "done:b"
    assert commit.calls == [["a"], ["b"]]


def test_groups_handed_in_during_a_commit_are_committed_together_each_answered() -> None:
    commit = _Held()
    shared = SharedCommit(commit)
    out: dict = {}
    first = _submit_in_thread(shared, "a", out)
    assert commit.entered.wait(10)
    others = [_submit_in_thread(shared, g, out) for g in ("b", "c", "d")]
    _wait_pending(shared, 3)
    assert out == {}  # nobody is answered before the commit that holds its group returned
    commit.release.set()
    for t in (first, *others):
        t.join(10)
    assert out == {g: f"done:{g}" for g in "abcd"}
    assert commit.calls[0] == ["a"]
    assert len(commit.calls) == 2 and sorted(commit.calls[1]) == ["b", "c", "d"]


def test_a_failed_commit_fails_every_group_in_it_and_the_next_commit_runs() -> None:
    commit = _Held(fail_on="c")
    shared = SharedCommit(commit)
    out: dict = {}
    first = _submit_in_thread(shared, "a", out)
    assert commit.entered.wait(10)
    others = [_submit_in_thread(shared, g, out) for g in ("b", "c")]
    _wait_pending(shared, 2)
    commit.release.set()
    for t in (first, *others):
        t.join(10)
    assert out["a"] == "done:a"
    assert isinstance(out["b"], RuntimeError) and isinstance(out["c"], RuntimeError)
    assert shared.submit("e") == "done:e"


def test_more_pending_groups_than_a_commit_takes_are_all_committed() -> None:
    commit = _Held()
    shared = SharedCommit(commit, max_groups=2)
    out: dict = {}
    first = _submit_in_thread(shared, "a", out)
    assert commit.entered.wait(10)
    others = [_submit_in_thread(shared, g, out) for g in "bcdef"]
    _wait_pending(shared, 5)
    commit.release.set()
    for t in (first, *others):
        t.join(10)
    assert out == {g: f"done:{g}" for g in "abcdef"}
    assert all(len(c) <= 2 for c in commit.calls)
    assert sorted(g for c in commit.calls for g in c) == list("abcdef")
