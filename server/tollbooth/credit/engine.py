"""The credit burn-down, pure: which grants a debit takes, what expires when.

No database and no clock. The service loads a `Book` (the grants and open holds of one
balance, or the part of them an operation needs), calls the engine with the time it was
given, then writes back the grants and holds the engine changed and one ledger entry per
effect it returned. Everything here is exact decimal arithmetic (`tollbooth.amounts`): its
context traps any rounding, so an amount is never silently changed.

Rules:
- A debit or a hold takes from live grants in consumption order: priority (lower first),
  then soonest expiry (no expiry last), then oldest.
- A grant is live until its expiry instant; at that instant its free remainder expires.
- A hold keeps what it took until it is committed, released or lapses at its own expiry.
  Credits a hold gives back return to their grant; if that grant has meanwhile expired (or
  was voided) they expire (or are voided) at that moment instead of reappearing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from tollbooth.amounts import ZERO, add, fmt, neg, sub

NO_EXPIRY_KEY = 2**63 - 1

ACTIVE = "active"
DEPLETED = "depleted"
EXPIRED = "expired"
VOIDED = "voided"

HELD = "held"
COMMITTED = "committed"
RELEASED = "released"
LAPSED = "expired"


def expiry_key(expire_at: dt.datetime | None) -> int:
    """Orders expiries as integers (epoch microseconds); no expiry sorts last."""
    if expire_at is None:
        return NO_EXPIRY_KEY
    delta = expire_at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass
class Grant:
    id: str
    seq: int
    priority: int
    expire_at: dt.datetime | None
    remaining: Decimal
    held: Decimal = ZERO
    state: str = ACTIVE

    @property
    def order_key(self) -> tuple[int, int, int]:
        return (self.priority, expiry_key(self.expire_at), self.seq)

    def live_at(self, at: dt.datetime) -> bool:
        return self.state in (ACTIVE, DEPLETED) and (self.expire_at is None or self.expire_at > at)

    def settle_state(self) -> None:
        if self.state in (ACTIVE, DEPLETED):
            self.state = ACTIVE if add(self.remaining, self.held) > 0 else DEPLETED


@dataclass(frozen=True)
class Portion:
    """Part of an amount, taken from (or returned to) one grant."""

    grant_id: str
    amount: Decimal


@dataclass
class Hold:
    id: str
    amount: Decimal
    expire_at: dt.datetime
    portions: list[Portion]
    state: str = HELD


# Effects: what the ledger records besides the operation's own entry.
@dataclass(frozen=True)
class Expired:
    grant_id: str
    amount: Decimal
    at: dt.datetime


@dataclass(frozen=True)
class Voided:
    grant_id: str
    amount: Decimal
    at: dt.datetime


@dataclass(frozen=True)
class Lapsed:
    """A hold reached its expiry: its whole amount comes back (followed by any Expired/Voided
    for parts whose grants are no longer live)."""

    hold_id: str
    amount: Decimal
    at: dt.datetime


Effect = Expired | Voided | Lapsed


class Insufficient(Exception):
    def __init__(self, available: Decimal, required: Decimal) -> None:
        super().__init__(f"{fmt(available)} available, {fmt(required)} required")
        self.available = available
        self.required = required
        self.shortfall = sub(required, available)


class HoldExceeded(Exception):
    """A commit asked for more than the hold holds."""


def consumption_order(grants: Iterable[Grant]) -> list[Grant]:
    return sorted(grants, key=lambda g: g.order_key)


def effect_delta(effect: Effect) -> Decimal:
    """What an effect does to the available balance."""
    return effect.amount if isinstance(effect, Lapsed) else neg(effect.amount)


@dataclass
class Book:
    """Grants and open holds of one balance (or the part an operation needs).

    Methods change the book in place and return what the ledger must record; `dirty` names
    the grants and holds that changed, so the caller writes back only those.
    """

    grants: dict[str, Grant] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    dirty_grants: set[str] = field(default_factory=set)
    dirty_holds: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, grants: Iterable[Grant] = (), holds: Iterable[Hold] = ()) -> Book:
        return cls({g.id: g for g in grants}, {h.id: h for h in holds})

    # -- figures ----------------------------------------------------------------------------

    def available(self) -> Decimal:
        """Free credit of the grants in the book (after `settle`, that is the balance)."""
        return add(*(g.remaining for g in self.grants.values()))

    def reserved(self) -> Decimal:
        return add(*(h.amount for h in self.holds.values() if h.state == HELD))

    def next_event_at(self) -> dt.datetime | None:
        """The earliest instant at which something in the book expires."""
        times = [
            g.expire_at
            for g in self.grants.values()
            if g.expire_at is not None and g.remaining > 0 and g.state == ACTIVE
        ]
        times += [h.expire_at for h in self.holds.values() if h.state == HELD]
        return min(times) if times else None

    # -- time -------------------------------------------------------------------------------

    def settle(self, now: dt.datetime) -> list[Effect]:
        """Apply every expiry at or before `now`, in time order, each at its own instant."""
        events: list[tuple[dt.datetime, int, int, str]] = []
        for g in self.grants.values():
            if g.expire_at is not None and g.expire_at <= now and g.state in (ACTIVE, DEPLETED):
                events.append((g.expire_at, 0, g.seq, g.id))
        for h in self.holds.values():
            if h.state == HELD and h.expire_at <= now:
                events.append((h.expire_at, 1, 0, h.id))
        effects: list[Effect] = []
        for at, kind, _, ident in sorted(events):
            if kind == 0:
                g = self.grants[ident]
                if g.remaining > 0:
                    effects.append(Expired(g.id, g.remaining, at))
                g.remaining = ZERO
                g.state = EXPIRED
                self.dirty_grants.add(g.id)
            else:
                h = self.holds[ident]
                h.state = LAPSED
                self.dirty_holds.add(h.id)
                effects.append(Lapsed(h.id, h.amount, at))
                effects += self._give_back(h.portions, at)
        return effects

    # -- operations -------------------------------------------------------------------------

    def _take(self, amount: Decimal, at: dt.datetime) -> list[Portion]:
        live = [g for g in consumption_order(self.grants.values()) if g.live_at(at)]
        available = add(*(g.remaining for g in live))
        if available < amount:
            raise Insufficient(available, amount)
        portions: list[Portion] = []
        left = amount
        for g in live:
            if left == 0:
                break
            if g.remaining <= 0:
                continue
            part = min(g.remaining, left)
            g.remaining = sub(g.remaining, part)
            left = sub(left, part)
            portions.append(Portion(g.id, part))
            self.dirty_grants.add(g.id)
        return portions

    def debit(self, amount: Decimal, at: dt.datetime) -> list[Portion]:
        """Take `amount` from live grants in consumption order; Insufficient if they lack it."""
        portions = self._take(amount, at)
        for p in portions:
            self.grants[p.grant_id].settle_state()
        return portions

    def hold(self, hold_id: str, amount: Decimal, expire_at: dt.datetime, at: dt.datetime) -> Hold:
        portions = self._take(amount, at)
        for p in portions:
            g = self.grants[p.grant_id]
            g.held = add(g.held, p.amount)
        h = Hold(hold_id, amount, expire_at, portions)
        self.holds[hold_id] = h
        self.dirty_holds.add(hold_id)
        return h

    def commit(
        self, hold_id: str, actual: Decimal, at: dt.datetime
    ) -> tuple[list[Portion], list[Effect]]:
        """Consume `actual` of an open hold (in consumption order) and give back the rest."""
        h = self.holds[hold_id]
        if actual < 0 or actual > h.amount:
            raise HoldExceeded(f"{fmt(actual)} is more than the {fmt(h.amount)} held")
        ordered = sorted(h.portions, key=lambda p: self.grants[p.grant_id].order_key)
        consumed: list[Portion] = []
        returned: list[Portion] = []
        left = actual
        for p in ordered:
            part = min(p.amount, left)
            left = sub(left, part)
            if part > 0:
                consumed.append(Portion(p.grant_id, part))
            if p.amount > part:
                returned.append(Portion(p.grant_id, sub(p.amount, part)))
        for p in consumed:
            g = self.grants[p.grant_id]
            g.held = sub(g.held, p.amount)
            g.settle_state()
            self.dirty_grants.add(g.id)
        h.state = COMMITTED
        self.dirty_holds.add(h.id)
        return consumed, self._give_back(returned, at)

    def release(self, hold_id: str, at: dt.datetime) -> list[Effect]:
        h = self.holds[hold_id]
        h.state = RELEASED
        self.dirty_holds.add(h.id)
        return self._give_back(h.portions, at)

    def void(self, grant_id: str, at: dt.datetime) -> list[Effect]:
        """Void what is free of a grant; parts under holds are voided when they come back."""
        g = self.grants[grant_id]
        effects: list[Effect] = []
        if g.remaining > 0:
            effects.append(Voided(g.id, g.remaining, at))
        g.remaining = ZERO
        g.state = VOIDED
        self.dirty_grants.add(g.id)
        return effects

    def _give_back(self, portions: Iterable[Portion], at: dt.datetime) -> list[Effect]:
        effects: list[Effect] = []
        for p in portions:
            g = self.grants[p.grant_id]
            g.held = sub(g.held, p.amount)
            self.dirty_grants.add(g.id)
            if g.live_at(at):
                g.remaining = add(g.remaining, p.amount)
                g.settle_state()
            elif g.state == VOIDED:
                effects.append(Voided(g.id, p.amount, at))
            else:
                # Expired meanwhile: the part expires now (with any free remainder, should
                # the caller not have settled the book first).
                if g.state in (ACTIVE, DEPLETED):
                    g.state = EXPIRED
                lost = add(p.amount, g.remaining)
                g.remaining = ZERO
                effects.append(Expired(g.id, lost, at))
        return effects
