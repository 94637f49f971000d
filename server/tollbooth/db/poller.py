"""A background thread that polls the database every few seconds until stopped: the inbox
worker (`webhooks.worker`) and the expiry sweeper (`credit.sweeper`). A failed poll (the
database away) is logged and tried again at the next interval."""

from __future__ import annotations

import logging
import threading
from typing import Self


class Poller:
    """Subclasses give `name`, `failure` (the log line of a failed poll) and `poll_once`."""

    name = "poller"
    failure = "poll failed"

    def __init__(self, interval_sec: float, log: logging.Logger) -> None:
        self.interval_sec = interval_sec
        self._log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> bool:
        """One poll; whether more is due at once (poll again without waiting)."""
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                again = self.poll_once()
            except Exception:  # noqa: BLE001 - the database may be away; try again later
                self._log.warning(self.failure, exc_info=True)
                again = False
            if not again:
                self._stop.wait(self.interval_sec)

    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
