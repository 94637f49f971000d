"""Webhook delivery: signed, at least once, retried with backoff, with optional faults.

A single worker thread sends what is due from the `deliveries` table; the POST happens outside
the store lock so requests are never blocked by a slow receiver.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time

import httpx

from tollbooth.sandbox.config import SandboxConfig
from tollbooth.sandbox.engine import Engine
from tollbooth.sandbox.signing import signature_header
from tollbooth.sandbox.store import Store

log = logging.getLogger("tollbooth.sandbox.delivery")

TICK_SEC = 5.0  # how often the default clock catches up with the wall clock


class Deliverer:
    def __init__(self, store: Store, engine: Engine, config: SandboxConfig) -> None:
        self.store = store
        self.engine = engine
        self.config = config
        self.faults = config.faults
        seed = None if config.faults.seed is None else config.faults.seed + 1
        self.rng = random.Random(seed)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(
            timeout=httpx.Timeout(config.delivery_timeout_sec), follow_redirects=False
        )
        self.attempts = 0  # total POSTs made, for logs and tests
        self.delays: list[float] = []  # injected delays, in seconds

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        self._client.close()

    def _run(self) -> None:
        last_tick = 0.0
        while not self._stop.is_set():
            now = time.time()
            if now - last_tick >= TICK_SEC:
                last_tick = now
                try:
                    with self.store.tx():
                        self.engine.tick_default_clock()
                        self.engine.expire_due_sessions()
                except Exception:  # noqa: BLE001 - keep the worker alive, log the cause
                    log.exception("default clock tick failed")
            try:
                self._deliver_due()
            except Exception:  # noqa: BLE001
                log.exception("delivery round failed")
            with self.store.lock:
                next_at = self.store.next_due_at()
            wait = 0.5 if next_at is None else max(0.0, min(0.5, next_at - time.time()))
            self._wake.wait(wait)
            self._wake.clear()

    def _deliver_due(self) -> None:
        if not self.config.webhook_url:
            return
        with self.store.lock:
            due = self.store.due(time.time())
        if self.faults.shuffle:
            self.rng.shuffle(due)
        for delivery_id, event_id, created, attempts in due:
            if self._stop.is_set():
                return
            with self.store.lock:
                event = self.store.get(event_id)
            if event is None:
                continue
            body = json.dumps(event, indent=2).encode()
            status = self._send(body)
            ok = status is not None and 200 <= status < 300
            attempts += 1
            now = time.time()
            if ok and self.faults.duplicate and self.rng.random() < self.faults.duplicate:
                self._send(body)  # a duplicate delivery of the same event
            if ok:
                next_at, done = now, True
            elif now - created > self.config.give_up_sec:
                log.warning("giving up on %s after %d attempts", event_id, attempts)
                next_at, done = now, True
            else:
                backoff = min(
                    self.config.retry_base_sec * (2 ** (attempts - 1)), self.config.retry_max_sec
                )
                next_at, done = now + backoff, False
            with self.store.tx() as store:
                store.mark_delivery(
                    delivery_id, done=done, status=status, next_at=next_at, attempts=attempts
                )
                if done:
                    obj = store.get(event_id)
                    if obj is not None:
                        obj["pending_webhooks"] = 0
                        store.put(obj)

    def _send(self, body: bytes) -> int | None:
        low, high = self.faults.delay_ms
        if high:
            delay = self.rng.uniform(low, high) / 1000.0
            self.delays.append(delay)
            self._stop.wait(delay)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks) tollbooth-sandbox",
            "Stripe-Signature": signature_header(body, self.config.webhook_secret),
        }
        self.attempts += 1
        try:
            response = self._client.post(self.config.webhook_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.info("webhook delivery failed: %s", exc.__class__.__name__)
            return None
        return response.status_code
