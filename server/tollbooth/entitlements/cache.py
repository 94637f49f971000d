"""Recent CheckEntitlement answers of one server replica, when the operator allows them.

An answer is kept for `ttl` seconds with the `as_of` it was computed at, so a cached answer
still says truthfully how fresh it is (and a metered one still counts every event committed
before its `as_of`). Off (ttl 0) by default: every call reads the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class AnswerCache(Generic[T]):
    def __init__(
        self,
        ttl_sec: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_size: int = 100_000,
    ) -> None:
        self.ttl = ttl_sec
        self._clock = clock
        self._max = max_size
        self._items: dict[Hashable, tuple[float, T]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The kept answer of `key` while it is younger than the ttl, else `compute()`'s."""
        if self.ttl <= 0:
            return compute()
        now = self._clock()
        kept = self._items.get(key)
        if kept is not None and now - kept[0] < self.ttl:
            return kept[1]
        answer = compute()
        with self._lock:
            if len(self._items) >= self._max:
                self._items.clear()
            self._items[key] = (now, answer)
        return answer
