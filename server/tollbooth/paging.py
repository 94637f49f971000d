"""Page sizes and page tokens for every List RPC, without a database.

A page token carries the ordering key of the last entry served and names the query it
belongs to, so the next page is a keyset query ("strictly after this key") that neither skips
nor repeats entries that stay put. Tokens are signed (HMAC-SHA256 with a key every replica
derives from its configured secrets), so a forged or edited token is refused as
PAGE_TOKEN_INVALID before its values reach SQL; the values are range-checked all the same.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets

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
    """A token for the page after the entry whose ordering key is `key`."""
    body = json.dumps({"v": TOKEN_VERSION, "q": query, "k": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(_sign(body) + body).decode().rstrip("=")


def decode(token: str, query: str, shape: tuple[type, ...]) -> list[KeyPart] | None:
    """The ordering key a token carries (None for an empty token: the first page).

    `shape` gives the type of each key part (int or str); anything else is refused.
    """
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
    if not isinstance(key, list) or len(key) != len(shape):
        raise bad_token()
    for part, kind in zip(key, shape, strict=True):
        if kind is int and not (type(part) is int and INT64_MIN <= part <= INT64_MAX):
            raise bad_token()
        if kind is str and not (
            isinstance(part, str) and 0 < len(part) <= MAX_TEXT and "\x00" not in part
        ):
            raise bad_token()
    return key


def bad_token() -> errors.DomainError:
    return errors.invalid(
        "page_token is malformed, altered or belongs to another query",
        reason="PAGE_TOKEN_INVALID",
        field="page_token",
    )
