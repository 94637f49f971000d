"""Group commit for streams: cut an incoming stream into groups, by size or by time.

A reader thread drains the request iterator into a buffer while the previous group is being
committed, so a stream runs at batch speed. A group is what arrived until `wait` seconds after
its first item arrived, or until it weighs `max_weight` (items are weighed by `weight`, the
number of events a message carries), whichever comes first; an item is never split. Nothing is
acknowledged here: the caller commits a group, then answers for it.

The buffer is a deque under one condition variable that is notified only when the consumer
waits for it (the first item, or a full group): a notification per message would cost more
than the message.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Grouper(Generic[T]):
    def __init__(
        self,
        source: Iterator[T],
        max_weight: int,
        wait: float,
        weight: Callable[[T], int] = lambda item: 1,
    ) -> None:
        self._source = source
        self._max = max(1, max_weight)
        self._wait = wait
        self._weight = weight
        self._cond = threading.Condition()
        self._buffer: deque[tuple[T, int]] = deque()
        self._buffered = 0  # total weight in the buffer
        self._first_at = 0.0  # arrival of the buffer's oldest item
        self._ended = False
        self._failure: BaseException | None = None
        self._stopped = False
        self._consumer_waits = False
        self._reader_waits = False
        self._thread = threading.Thread(target=self._read, name="usage-stream-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        cond, buffer, weight = self._cond, self._buffer, self._weight
        # Bounded: when commits fall behind, the reader stops reading and gRPC flow control
        # slows the sender down.
        high = 4 * self._max
        try:
            for item in self._source:
                w = weight(item)
                with cond:
                    while self._buffered >= high and not self._stopped:
                        self._reader_waits = True
                        cond.wait(0.5)
                        self._reader_waits = False
                    if self._stopped:
                        return
                    if not buffer:
                        self._first_at = time.monotonic()
                    buffer.append((item, w))
                    self._buffered += w
                    if self._consumer_waits and (len(buffer) == 1 or self._buffered >= self._max):
                        cond.notify_all()
        except BaseException as exc:  # handed to the consumer, raised there
            with cond:
                self._failure = exc
                cond.notify_all()
            return
        with cond:
            self._ended = True
            cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _take(self) -> list[T]:
        group: list[T] = []
        taken = 0
        buffer = self._buffer
        while buffer and (not group or taken + buffer[0][1] <= self._max):
            item, w = buffer.popleft()
            group.append(item)
            taken += w
        self._buffered -= taken
        # What stays in the buffer keeps its first arrival time: it is already due.
        if self._reader_waits:
            self._cond.notify_all()
        return group

    def groups(self) -> Iterator[list[T]]:
        """Groups until the source ends; a source error is raised after the groups before it."""
        cond = self._cond
        try:
            while True:
                with cond:
                    while True:
                        if self._buffer:
                            if self._buffered >= self._max or self._ended or self._failure:
                                break
                            remaining = self._first_at + self._wait - time.monotonic()
                            if remaining <= 0:
                                break
                        elif self._ended:
                            return
                        elif self._failure is not None:
                            raise self._failure
                        else:
                            remaining = None
                        self._consumer_waits = True
                        cond.wait(remaining)
                        self._consumer_waits = False
                    group = self._take()
                yield group
        finally:
            self.close()


class SharedCommit(Generic[T, R]):
    """Group commit across streams: the groups that several streams hand in while a commit
    runs are committed together by the next one (leader and followers, no extra thread).

    `commit` takes the handed-in groups, in order, and returns one result per group (or
    raises: every group of that commit then raises the same error). `submit` returns only
    after the commit that held its group has returned, so a stream still acknowledges its
    events only after their commit. With one stream this is the stream's own commit; with
    N streams a commit carries up to N groups, so its fixed cost (transaction, statement,
    round trips) is shared instead of paid once per stream.
    """

    def __init__(self, commit: Callable[[list[T]], Sequence[R]], max_groups: int = 16) -> None:
        self._commit = commit
        self._max = max(1, max_groups)
        self._cond = threading.Condition()
        self._pending: deque[_Slot[T, R]] = deque()
        self._busy = False

    def submit(self, group: T) -> R:
        slot: _Slot[T, R] = _Slot(group)
        cond = self._cond
        with cond:
            self._pending.append(slot)
        while True:
            with cond:
                while self._busy and not slot.done:
                    cond.wait()
                if slot.done:
                    break
                # Nobody commits: this caller leads, for the oldest pending groups (its own
                # among them unless more than max_groups wait: then it leads again).
                self._busy = True
                pending = self._pending
                taken = [pending.popleft() for _ in range(min(self._max, len(pending)))]
            self._lead(taken)
        if slot.failure is not None:
            raise slot.failure
        return slot.result  # type: ignore[return-value]  # set with done, failure unset

    def _lead(self, taken: list[_Slot[T, R]]) -> None:
        failure: BaseException | None = None
        results: Sequence[R] = ()
        try:
            results = self._commit([s.group for s in taken])
            if len(results) != len(taken):
                raise RuntimeError("SharedCommit: one result per group expected")
        except BaseException as exc:  # every group of this commit fails with it
            failure = exc
        with self._cond:
            for i, s in enumerate(taken):
                if failure is not None:
                    s.failure = failure
                else:
                    s.result = results[i]
                s.done = True
            self._busy = False
            self._cond.notify_all()


class _Slot(Generic[T, R]):
    __slots__ = ("done", "failure", "group", "result")

    def __init__(self, group: T) -> None:
        self.group = group
        self.result: R | None = None
        self.failure: BaseException | None = None
        self.done = False
