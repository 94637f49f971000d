"""Catalog listing order and page tokens, without a database.

Entries are listed by (position, seq, id): the configured position first, then creation
order (`seq` is a monotonic counter), then the id so the order is total. Pages and tokens are
the shared keyset paging of tollbooth.paging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tollbooth import paging
from tollbooth.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Keyset, page_size

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "ORDER",
    "Cursor",
    "decode_token",
    "encode_token",
    "keyset",
    "next_position",
    "page_size",
    "query_key",
]

INT32_MAX = 2**31 - 1
# The ordering key: position (an int32 on the wire), seq, id.
ORDER = (paging.Int(0, INT32_MAX), paging.Int(), paging.Text())


class Listed(Protocol):
    position: int
    seq: int
    id: str


@dataclass(frozen=True)
class Cursor:
    """The ordering key of the last entry of a page."""

    position: int
    seq: int
    id: str


def order_key(entry: Listed) -> tuple[int, int, str]:
    return (entry.position, entry.seq, entry.id)


def query_key(kind: str, *, include_inactive: bool, parent: str = "") -> str:
    """Names the query a token belongs to; a token is refused by any other query."""
    return f"{kind}:{parent}:{int(include_inactive)}"


def keyset(query: str, requested_size: int = 0) -> Keyset[Any]:
    """The paging of one catalog listing (products, or the prices of one product)."""
    return Keyset.of(query, ORDER, order_key, requested_size)


def encode_token(query: str, cursor: Cursor) -> str:
    return keyset(query).token((cursor.position, cursor.seq, cursor.id))


def decode_token(token: str, query: str) -> Cursor | None:
    """The cursor a token carries; None for an empty token (the first page)."""
    after = keyset(query).after(token)
    return Cursor(*after) if after is not None else None


def next_position(current_max: int | None) -> int:
    """The position of an entry created without one: after every existing sibling."""
    if current_max is None:
        return 1
    # Positions are int32 on the wire; at the ceiling, ties keep creation order anyway.
    return min(current_max + 1, INT32_MAX)
