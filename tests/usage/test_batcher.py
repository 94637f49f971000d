"""Group commit for streams: groups by size and by time, errors after the groups before them."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

import pytest

from tollbooth.usage.batcher import Grouper

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
