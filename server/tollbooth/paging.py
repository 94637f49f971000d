"""Keyset paging for every List RPC: page sizes, signed page tokens, pages.

A page token carries the ordering key of the last entry served and names the query it
belongs to, so the next page is a keyset query ("strictly after this key") that neither skips
nor repeats entries that stay put. Tokens are signed (HMAC-SHA256 with a key every replica
derives from its configured secrets), so a forged or edited token is refused as
PAGE_TOKEN_INVALID before its values reach SQL; the values are range-checked all the same.

One List, one `Keyset`: the query it names, the parts of its ordering key (`Int`, `Text`,
`Micros` for a datetime), and the function that reads that key off a row::

    keyset = Keyset.of(f"credit-ledger:{account_id}", (Micros(), Int(), Text()),
                       lambda e: (e.created_at, e.seq, e.id), page_size)
    after = keyset.after(page_token)            # None, or the key's values (datetimes back)
    rows = repository.list_ledger(session, ..., after=after, limit=keyset.limit)  # size + 1
    return keyset.page(rows)                    # Page(items, next_page_token)

`after_clause(columns, after)` is the SQL side: "strictly after `after` in the lexicographic
order of `columns`" (`descending=True` for a newest-first listing). Every List of the server
(catalog, credit, subscriptions, usage) pages this way; there is no other token format.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, and_, or_

from tollbooth import errors

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_TOKEN_LENGTH = 1024
TOKEN_VERSION = 2
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_TEXT = 200

# Replaced at start-up by `configure` (Deps.build); a process that never configures (a unit
# test) signs with a random key of its own.
_key = secrets.token_bytes(32)

KeyPart = int | str


def configure(secret_material: list[str]) -> None:
    """Derive the signing key from secrets every replica shares (the JWT keys)."""
    global _key
    joined = "\x1f".join(sorted(secret_material)).encode()
    _key = hashlib.sha256(b"tollbooth.page-token\x1f" + joined).digest()


def page_size(
    requested: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE
) -> int:
    """0 means the default; larger than the maximum is clamped; negative is refused."""
    if requested < 0:
        raise errors.invalid("page_size must not be negative", field="page_size")
    if requested == 0:
        return default
    return min(requested, maximum)


def _sign(body: bytes) -> bytes:
    return hmac.new(_key, body, hashlib.sha256).digest()[:16]


def encode(query: str, key: list[KeyPart]) -> str:
    """Sign raw key parts into a token for `query` (what `Keyset.token` builds on).

    Lists go through a `Keyset`, which dumps each part first and loads it back checked.
    """
    body = json.dumps({"v": TOKEN_VERSION, "q": query, "k": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(_sign(body) + body).decode().rstrip("=")


def _open(token: str, query: str, length: int) -> list[Any] | None:
    """The raw key of a token signed for `query`, of `length` parts; None for no token."""
    if not token:
        return None
    if len(token) > MAX_TOKEN_LENGTH:
        raise bad_token()
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise bad_token() from exc
    mac, body = raw[:16], raw[16:]
    if len(mac) != 16 or not hmac.compare_digest(mac, _sign(body)):
        raise bad_token()
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_token() from exc
    if not isinstance(data, dict) or data.get("v") != TOKEN_VERSION or data.get("q") != query:
        raise bad_token()
    key = data.get("k")
    if not isinstance(key, list) or len(key) != length:
        raise bad_token()
    return key


def bad_token() -> errors.DomainError:
    return errors.invalid(
        "page_token is malformed, altered or belongs to another query",
        reason="PAGE_TOKEN_INVALID",
        field="page_token",
    )


# -- the parts of an ordering key ---------------------------------------------------------------


@dataclass(frozen=True)
class Int:
    """An integer part, within [lo, hi] (int64 by default)."""

    lo: int = INT64_MIN
    hi: int = INT64_MAX

    def dump(self, value: Any) -> KeyPart:
        return int(value)

    def load(self, raw: object) -> int:
        if type(raw) is not int or not self.lo <= raw <= self.hi:
            raise bad_token()
        return raw


# Text that may be empty travels behind this mark (a token never carries an empty string).
_TEXT_MARK = "k"


@dataclass(frozen=True)
class Text:
    """A text part: at most MAX_TEXT characters, no NUL; empty only if `empty`."""

    empty: bool = False

    def dump(self, value: Any) -> KeyPart:
        return _TEXT_MARK + str(value) if self.empty else str(value)

    def load(self, raw: object) -> str:
        if not (isinstance(raw, str) and 0 < len(raw) <= MAX_TEXT and "\x00" not in raw):
            raise bad_token()
        if self.empty:
            if not raw.startswith(_TEXT_MARK):
                raise bad_token()
            return raw[len(_TEXT_MARK) :]
        return raw


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Micros:
    """A datetime part, as whole microseconds since the epoch (exact; naive means UTC)."""

    def dump(self, value: Any) -> KeyPart:
        at: dt.datetime = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        delta = at - EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

    def load(self, raw: object) -> dt.datetime:
        micros = Int().load(raw)
        try:
            return EPOCH + dt.timedelta(microseconds=micros)
        except OverflowError as exc:
            raise bad_token() from exc


Part = Int | Text | Micros
T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a List: its entries and the token of the next page ("" on the last)."""

    items: list[T]
    next_page_token: str


@dataclass(frozen=True)
class Keyset(Generic[T]):
    """The paging of one List query: see the module docstring."""

    query: str
    parts: tuple[Part, ...]
    key: Callable[[T], Sequence[Any]]
    size: int = DEFAULT_PAGE_SIZE

    @classmethod
    def of(
        cls,
        query: str,
        parts: Sequence[Part],
        key: Callable[[T], Sequence[Any]],
        requested_size: int = 0,
        *,
        default: int = DEFAULT_PAGE_SIZE,
        maximum: int = MAX_PAGE_SIZE,
    ) -> Keyset[T]:
        """`requested_size` as the request gave it (0: default; refused if negative)."""
        return cls(query, tuple(parts), key, page_size(requested_size, default, maximum))

    @property
    def limit(self) -> int:
        """How many rows to fetch: one more than a page shows whether another page follows."""
        return self.size + 1

    def after(self, token: str) -> tuple[Any, ...] | None:
        """The ordering key the token carries, each part loaded (None: the first page)."""
        raw = _open(token, self.query, len(self.parts))
        if raw is None:
            return None
        return tuple(part.load(value) for part, value in zip(self.parts, raw, strict=True))

    def token(self, values: Sequence[Any]) -> str:
        """The token of the page after the entry whose ordering key is `values`."""
        return encode(
            self.query, [part.dump(v) for part, v in zip(self.parts, values, strict=True)]
        )

    def page(self, rows: Sequence[T]) -> Page[T]:
        """The page of rows fetched with `limit`, and the token of the next one."""
        if len(rows) <= self.size:
            return Page(list(rows), "")
        items = list(rows[: self.size])
        return Page(items, self.token(self.key(items[-1])))


def after_clause(
    columns: Sequence[Any], values: Sequence[Any], *, descending: bool = False
) -> ColumnElement[bool]:
    """SQL: strictly after `values` in the lexicographic order of `columns` (descending: before)."""
    clauses = []
    for i, col in enumerate(columns):
        prefix = [c == v for c, v in zip(columns[:i], values[:i], strict=True)]
        step = col < values[i] if descending else col > values[i]
        clauses.append(and_(*prefix, step))
    return or_(*clauses)
