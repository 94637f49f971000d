"""What a checkout request asks for, by meaning: the intent it records and its fingerprint.

Two requests under one request_id are the same request when they record the same intent: the
same prices (by lookup key, catalog id, seed 002's `tier` or seed 003's `line_items`), the
same redirect URLs as the allow-list cleans them, the same reference less the spaces around
it, the same e-mail. `Servicer.staged` asks `same_intent` when a stored request_id's
fingerprint (`rpc/fingerprint.py`, the request's own fields) differs from a retry's, so the
answer does not depend on whether the first attempt completed: the intent's check
(`intents._plan`) and the stored key's agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts.manage import clean_email
from tollbooth.accounts.service import resolve
from tollbooth.auth.caller import Caller
from tollbooth.checkout import repository
from tollbooth.checkout.portal import same_account
from tollbooth.checkout.redirects import check_redirect
from tollbooth.checkout.service import (
    ItemRequest,
    check_currency,
    check_minimum_charge,
    check_mode,
    default_offer,
    resolve_items,
)
from tollbooth.db import Database
from tollbooth.ids import new_id


@dataclass(frozen=True)
class CheckoutRequest:
    account_ref: str
    items: Sequence[ItemRequest]
    success_url: str
    cancel_url: str
    client_reference: str
    request_scope: str
    request_id: str
    mode: str = ""  # seed 003's `mode`; empty: derived from the prices
    customer_email: str = ""  # seed 003's: the account's e-mail when it has none
    currency: str = ""  # seed 001's: the prices' currency, checked; empty: not checked
    default_lookup_key: str = ""  # BILLING_CHECKOUT_DEFAULT_LOOKUP_KEY: sold when no items
    also_named: str = ""  # seed 001's `accountId` beside `account`: must name the same one
    request_digest: str = ""  # what `Servicer.staged` stores the request_id under


@dataclass(frozen=True)
class Asked:
    """A request's intent, checked: lines, URLs, reference, mode, e-mail and fingerprints
    (what a new intent records, and the form older intents recorded)."""

    lines: list[Any]
    success: str
    cancel: str
    reference: str
    mode: str
    email: str | None
    fingerprint: str
    legacy: str
    currency: str = ""  # a setup checkout's currency asked for (seed 001's); else empty


def checkout_id_for(scope: str, account_id: str, request_id: str) -> str:
    """Our checkout id: derived from the request when it has a request_id, so a retry finds
    the intent the first attempt recorded."""
    if not request_id:
        return new_id("chk")
    digest = hashlib.sha256("\x1f".join((scope, account_id, request_id)).encode()).hexdigest()
    return f"chk_{digest[:24]}"


def _fingerprints(
    lines: list[Any],
    success: str,
    cancel: str,
    reference: str,
    mode: str,
    email: str | None,
    currency: str = "",
) -> tuple[str, str]:
    """(what a new intent records: SHA-256 of a JSON array of the fields, unambiguous; the
    U+001F join older intents recorded, still recognised on their retry, never rewritten); a
    setup checkout's `currency` asked for is appended only when given (as before it counted)."""
    items = [[ln.price.id, ln.quantity] for ln in lines]
    setup = mode if mode == "setup" else ""  # the other modes follow from the prices
    fields = ["checkout/2", items, success, cancel, reference, setup, email or "", currency]
    encoded = json.dumps(fields if currency else fields[:-1], separators=(",", ":"))
    parts = [f"{ln.price.id}x{ln.quantity}" for ln in lines] + [success, cancel, reference]
    if setup:
        parts.append(setup)
    if email:
        parts.append(f"customer_email={email}")
    legacy = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return hashlib.sha256(encoded.encode()).hexdigest(), legacy


def asked(session: Session, req: CheckoutRequest, origins: Sequence[str], caller: Caller) -> Asked:
    """The request's intent, checked (INVALID_ARGUMENT with a stable reason; reads only). The
    redirect URLs are held to `origins` only for a browser's caller (a bearer token alone): a
    call carrying the service key may name any (`redirects.check_redirect`)."""
    anywhere = caller.from_backend
    success = check_redirect(
        req.success_url, "success_url", origins, required=True, any_origin=anywhere
    )
    cancel = check_redirect(
        req.cancel_url, "cancel_url", origins, required=False, any_origin=anywhere
    )
    reference = req.client_reference.strip()
    setup = req.mode.strip().lower() == "setup"
    if req.items:
        lines = resolve_items(session, req.items)
    else:  # seed 001's body names no items: the configured default offer
        lines = [] if setup else default_offer(session, req.default_lookup_key)
    mode = check_mode(req.mode, lines)
    listed = "line_items" if req.items and req.items[0].which == "price" else "items"
    check_minimum_charge(mode, lines, listed)
    currency = check_currency(req.currency, lines)
    email = clean_email(req.customer_email, "customer_email")
    fingerprint, legacy = _fingerprints(lines, success, cancel, reference, mode, email, currency)
    return Asked(lines, success, cancel, reference, mode, email, fingerprint, legacy, currency)


def same_intent(
    db: Database, caller: Caller, req: CheckoutRequest, origins: Sequence[str], answered: str
) -> bool:
    """Whether the checkout `answered` (the id the response stored under the request's
    request_id names; "" for a portal answer) is the one `req` asks for (False when there is
    none, or when `req` is refused: it asks for nothing the same). The answer's own checkout,
    not the one recorded under the request_id: a twin sent at the same moment with other URLs
    records its own there, while the first was answered the open checkout it asked for
    exactly; the twin is not that checkout's request."""
    if not answered:
        return False
    try:
        with db.transaction(readonly=True) as session:
            if req.also_named:
                same_account(session, caller, req.account_ref, req.also_named)
            account = resolve(session, caller, req.account_ref)
            own = repository.checkout_by_id(session, answered, owner=account.id)
            if own is None:
                return False
            mine = asked(session, req, origins, caller)
            return own.fingerprint in (mine.fingerprint, mine.legacy)
    except errors.DomainError:
        return False
