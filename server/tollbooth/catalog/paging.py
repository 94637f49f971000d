"""Listing order and page tokens, without a database.

Entries are listed by (position, seq, id): the configured position first, then creation
order (`seq` is a monotonic counter), then the id so the order is total. A page token is the
key of the last entry served plus the query it belongs to, so the next page is a keyset
query ("strictly after this key") that neither skips nor repeats entries that stay put.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from tollbooth import errors

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
TOKEN_VERSION = 1
_INT64 = 2**63
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Cursor:
    """The ordering key of the last entry of a page."""

    position: int
    seq: int
    id: str


def page_size(requested: int) -> int:
    """0 means the default; larger than the maximum is clamped; negative is refused."""
    if requested < 0:
        raise errors.invalid("page_size must not be negative", field="page_size")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def query_key(kind: str, *, include_inactive: bool, parent: str = "") -> str:
    """Names the query a token belongs to; a token is refused by any other query."""
    return f"{kind}:{parent}:{int(include_inactive)}"


def encode_token(query: str, cursor: Cursor) -> str:
    body = {"v": TOKEN_VERSION, "q": query, "p": cursor.position, "s": cursor.seq, "i": cursor.id}
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, query: str) -> Cursor | None:
    """The cursor a token carries; None for an empty token (the first page)."""
    if not token:
        return None
    if len(token) > 1024:
        raise _bad_token()
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise _bad_token() from exc
    if not isinstance(body, dict) or body.get("v") != TOKEN_VERSION or body.get("q") != query:
        raise _bad_token()
    ident = body.get("i")
    if not isinstance(ident, str) or not ident:
        raise _bad_token()
    return Cursor(_int(body.get("p")), _int(body.get("s")), ident)


def _int(value: object) -> int:
    if type(value) is not int or not -_INT64 <= value < _INT64:
        raise _bad_token()
    return value


def _bad_token() -> errors.DomainError:
    return errors.invalid(
        "page_token is malformed or belongs to another query",
        reason="PAGE_TOKEN_INVALID",
        field="page_token",
    )


def next_position(current_max: int | None) -> int:
    """The position of an entry created without one: after every existing sibling."""
    if current_max is None:
        return 1
    # Positions are int32 on the wire; at the ceiling, ties keep creation order anyway.
    return min(current_max + 1, INT32_MAX)
