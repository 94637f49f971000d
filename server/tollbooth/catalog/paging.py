"""Catalog listing order and page tokens, without a database.

Entries are listed by (position, seq, id): the configured position first, then creation
order (`seq` is a monotonic counter), then the id so the order is total. Tokens are the
shared signed tokens of tollbooth.paging.
"""

from __future__ import annotations

from dataclasses import dataclass

from tollbooth import paging
from tollbooth.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page_size

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "Cursor",
    "decode_token",
    "encode_token",
    "next_position",
    "page_size",
    "query_key",
]

INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Cursor:
    """The ordering key of the last entry of a page."""

    position: int
    seq: int
    id: str


def query_key(kind: str, *, include_inactive: bool, parent: str = "") -> str:
    """Names the query a token belongs to; a token is refused by any other query."""
    return f"{kind}:{parent}:{int(include_inactive)}"


def encode_token(query: str, cursor: Cursor) -> str:
    return paging.encode(query, [cursor.position, cursor.seq, cursor.id])


def decode_token(token: str, query: str) -> Cursor | None:
    """The cursor a token carries; None for an empty token (the first page)."""
    key = paging.decode(token, query, (int, int, str))
    if key is None:
        return None
    position, seq, ident = key
    assert isinstance(position, int) and isinstance(seq, int) and isinstance(ident, str)
    if not 0 <= position <= INT32_MAX:
        raise paging.bad_token()
    return Cursor(position, seq, ident)


def next_position(current_max: int | None) -> int:
    """The position of an entry created without one: after every existing sibling."""
    if current_max is None:
        return 1
    # Positions are int32 on the wire; at the ceiling, ties keep creation order anyway.
    return min(current_max + 1, INT32_MAX)
