"""Throttling failed console sign-ins, with the `limits` library the RPC rate limits use.

Two fixed windows count wrong operator keys: one per client address
(BILLING_RATE_LIMIT_CONSOLE_SIGNIN, 10/minute) and one for every address together
(BILLING_RATE_LIMIT_CONSOLE_SIGNIN_ALL, 100/minute). While either is used up, every sign-in it
covers is refused with 429 RATE_LIMITED whatever the key (a correct key too: otherwise an
attacker could go on guessing at full speed and the right guess would still get in); when the
window ends, sign-in works again. A correct sign-in is never counted, so an
operator signing in from several browsers is not throttled.

The counters live where the RPC limits' do (the service's database unless
BILLING_RATE_LIMIT_STORAGE names another storage), so every sidecar replica shares them. A
wrong key is counted (one atomic increment in the storage) before it is answered and refused
when its count is over the window, so guesses racing on several replicas get the window and
not one more. A storage outage refuses every sign-in, right key or not (503
SERVICE_UNAVAILABLE, logged): a throttle that let sign-ins through while its storage failed
could be opened by overloading that storage (the service's own database by default, down or
out of connections, where the console could not work anyway). The RPC limits, which only
shape load, let calls through instead.

The client address is the one Envoy saw: the console's route sets `x-tollbooth-client`
from the downstream address, overwriting whatever the client sent. Straight to the sidecar
(loopback only), the connection's own address is used when the header is absent. An IPv6
client is counted by its /64 (`counted_as`).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter
from starlette.requests import Request

from tollbooth.rpc.ratelimit import parse_limit

log = logging.getLogger("tollbooth.console")

CLIENT_HEADER = "x-tollbooth-client"
# An address longer than this is not an address: counted under its prefix.
MAX_ADDRESS = 64


def counted_as(address: str) -> str:
    """What one client's failures are counted under: an IPv4 address (also written as an
    IPv4-mapped IPv6 one), an IPv6 client's /64 (it holds the whole network, one new address
    per guess would otherwise be a fresh window), each in one canonical form. Anything else
    as it is, cut to MAX_ADDRESS."""
    text = address.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return address[:MAX_ADDRESS]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def client_address(request: Request) -> str:
    given = request.headers.get(CLIENT_HEADER, "").strip()
    if given:
        return counted_as(given)
    return counted_as(request.client.host) if request.client else "unknown"


@dataclass(frozen=True)
class Refusal:
    """A sign-in refused by the throttle: which window, and when to retry (seconds)."""

    scope: str  # "address" or "all"
    retry_after_sec: int

    @property
    def message(self) -> str:
        whose = "from this address" if self.scope == "address" else "to the console"
        return (
            f"too many failed sign-ins {whose}; retry after {self.retry_after_sec} s "
            "(nothing was checked)"
        )


class ThrottleDown(Exception):
    """The throttle's counters could not be read or written: no sign-in is checked."""


class SigninThrottle:
    """Counts failed sign-ins per address and in total; refuses while either is used up."""

    def __init__(
        self, storage: Storage, per_address: RateLimitItem | None, all_: RateLimitItem | None
    ) -> None:
        self._limiter = FixedWindowRateLimiter(storage)
        self._limits = [
            (scope, item) for scope, item in (("address", per_address), ("all", all_)) if item
        ]

    @classmethod
    def from_rates(cls, storage: Storage, per_address: str, all_: str) -> SigninThrottle:
        return cls(storage, parse_limit(per_address), parse_limit(all_))

    def _ids(self, scope: str, address: str) -> tuple[str, ...]:
        return ("console_signin", address) if scope == "address" else ("console_signin_all",)

    def _refusal(self, scope: str, item: RateLimitItem, address: str) -> Refusal:
        stats = self._limiter.get_window_stats(item, *self._ids(scope, address))
        return Refusal(scope, max(1, math.ceil(stats.reset_time - time.time())))

    def attempt(self, address: str, key_is_right: bool) -> Refusal | None:
        """A Refusal when a window is used up (whatever the key); else a wrong key is counted.
        ThrottleDown when the storage fails (the sign-in is then refused, see the module).

        A wrong key is counted before it is answered, and refused when its own count is over
        the window: the count is one atomic increment in the storage, so guesses racing in
        several threads or on several replicas get the window and not one more (no lock is
        held here: a flood of sign-ins never queues behind one counter's round trip)."""
        try:
            for scope, item in self._limits:
                if not self._limiter.test(item, *self._ids(scope, address)):
                    return self._refusal(scope, item, address)
            if not key_is_right:
                for scope, item in self._limits:
                    if not self._limiter.hit(item, *self._ids(scope, address)):
                        return self._refusal(scope, item, address)
        except Exception as exc:  # any storage's failure (the limits library wraps none)
            log.warning("console sign-in throttle storage failed; refused", exc_info=True)
            raise ThrottleDown(str(exc)) from exc
        if key_is_right:
            self._purge()
        return None

    def _purge(self) -> None:
        """Remove the per-address counters whose windows have ended, where the storage keeps
        them until asked (the database's `purge_ended`; memory and Redis expire keys on their
        own). Each address that ever failed a sign-in is one row; guesses from many addresses
        would grow the table for ever. Done at a right sign-in (rare, and not the attacker's
        to trigger), a bounded statement; its failure is logged, never the sign-in's."""
        purge = getattr(self._limiter.storage, "purge_ended", None)
        if purge is None:
            return
        try:
            for item in {item.namespace for _, item in self._limits}:
                purge(f"{item}/console_signin/")
        except Exception:  # any storage's failure (the limits library wraps none)
            log.warning("ended sign-in counters could not be purged", exc_info=True)
