"""Group commit for streams: cut an incoming stream into groups, by size or by time.

A reader thread drains the request iterator into a bounded queue while the previous group is
being committed, so a stream runs at batch speed. A group is every item that arrived within
`wait` seconds of its first item, at most `max_items`. Nothing is acknowledged here: the caller
commits a group, then answers for it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Grouper(Generic[T]):
    def __init__(self, source: Iterator[T], max_items: int, wait: float) -> None:
        self._source = source
        self._max = max_items
        self._wait = wait
        # Bounded: when commits fall behind, the reader stops reading and gRPC flow control
        # slows the sender down.
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(2 * max_items, 16))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="usage-stream-reader", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Failure(exc))
            return
        self._put(_END)

    def close(self) -> None:
        self._stop.set()

    def groups(self) -> Iterator[list[T]]:
        """Groups until the source ends; a source error is raised after the group before it."""
        pending: BaseException | None = None
        try:
            while True:
                first = self._queue.get()
                if first is _END:
                    return
                if isinstance(first, _Failure):
                    raise first.exc
                group: list[T] = [first]  # type: ignore[list-item]
                deadline = time.monotonic() + self._wait
                ended = False
                while len(group) < self._max:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        try:
                            item = self._queue.get(timeout=remaining)
                        except queue.Empty:
                            break
                    if item is _END:
                        ended = True
                        break
                    if isinstance(item, _Failure):
                        pending = item.exc
                        break
                    group.append(item)  # type: ignore[arg-type]
                yield group
                if pending is not None:
                    raise pending
                if ended:
                    return
        finally:
            self.close()
