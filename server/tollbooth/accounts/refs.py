"""Account refs already resolved: an RPC's (caller, account ref) to the account id it names,
kept by a servicer once resolved (hits only). A principal's account never changes and accounts
are never deleted, so a kept resolution stays true; a bearer's ref was checked against its own
account when it was resolved.
"""

from __future__ import annotations

import threading

from sqlalchemy.orm import Session

from tollbooth.accounts.service import resolve
from tollbooth.auth.caller import Caller


def caller_key(caller: Caller) -> str:
    """What of the caller decides an answer: its own account for a bearer, else nothing."""
    return f"bearer:{caller.account_id}" if caller.is_bearer else "service"


class AccountRefs:
    """Account id of every (caller, ref) already resolved by this server (hits only); one per
    servicer, so per database."""

    def __init__(self, max_size: int = 100_000) -> None:
        self._known: dict[tuple[str, str], str] = {}
        self._max = max_size
        self._lock = threading.Lock()

    def known(self, caller: Caller, ref: str) -> str | None:
        """The account id of (caller, ref) if already resolved, without reading."""
        return self._known.get((caller_key(caller), ref.strip()))

    def account_id(self, session: Session, caller: Caller, ref: str) -> str:
        key = (caller_key(caller), ref.strip())
        found = self._known.get(key)
        if found is None:
            found = resolve(session, caller, ref).id
            with self._lock:
                if len(self._known) >= self._max:
                    self._known.clear()
                self._known[key] = found
        return found
