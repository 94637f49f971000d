"""Where a buyer may be sent back: success, cancel and return URLs against the allow-list.

A URL is accepted only when it is an absolute http(s) URL with a host and a valid port, of at
most 2048 characters, carrying no userinfo (`https://app.example@evil.example/`), no backslash
(browsers read `\\` as `/`) and no control character (CR, LF, NUL, tab...); and, for a call
authenticated by a bearer token alone (what a browser holds), whose origin (scheme, host, port)
is one of `BILLING_REDIRECT_ORIGINS` (default: the CORS origins). A call that carries the
service key (`any_origin`: a backend, as Stripe's secret-key callers, who may name any URL;
seed 003 and seed 001's step 4 send `https://yourapp.com/...`) may name any origin. Anything
else is INVALID_ARGUMENT `REDIRECT_URL_NOT_ALLOWED`, before anything is written or sent to the
provider. Stripe's `{CHECKOUT_SESSION_ID}` placeholder is an ordinary part of the path or query
and stays allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from tollbooth import errors

REASON = "REDIRECT_URL_NOT_ALLOWED"
MAX_URL = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}


def _refuse(field_name: str, why: str) -> errors.DomainError:
    return errors.invalid(f"{field_name} {why}", reason=REASON, field=field_name)


def origin_of(scheme: str, host: str, port: int | None) -> str:
    shown = host if ":" not in host else f"[{host}]"
    if port is None or port == DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{shown}"
    return f"{scheme}://{shown}:{port}"


def _normal(origin: str) -> str:
    parts = urlsplit(origin)
    try:
        port = parts.port
    except ValueError:
        return origin
    return origin_of(parts.scheme, parts.hostname or "", port)


def check_redirect(
    value: str,
    field_name: str,
    allowed: Iterable[str],
    *,
    required: bool,
    any_origin: bool = False,
) -> str:
    """The URL as given (its scheme in lower case) when it may be used as a redirect; raises
    REDIRECT_URL_NOT_ALLOWED. `any_origin` (`Caller.from_backend`): every check but the
    origin's."""
    if not value.strip():
        if required:
            raise errors.required(field_name)
        return ""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise _refuse(field_name, "holds a control character")
    value = value.strip()
    if "\\" in value:
        raise _refuse(field_name, "holds a backslash")
    if any(ch.isspace() for ch in value):  # Stripe: url_invalid; a browser would encode it
        raise _refuse(field_name, "holds a space (percent-encode it)")
    if len(value) > MAX_URL:
        raise _refuse(field_name, f"is longer than {MAX_URL} characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _refuse(field_name, "must be an absolute http(s) URL")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise _refuse(field_name, "must not carry a user name or password")
    try:
        port = parts.port
    except ValueError:
        raise _refuse(field_name, "has an invalid port") from None
    host = parts.hostname or ""
    if not host:
        raise _refuse(field_name, "has no host")
    origin = origin_of(parts.scheme, host, port)
    if not any_origin and origin not in {_normal(o) for o in allowed}:
        raise errors.invalid(
            f"{field_name} must point to an allowed origin (BILLING_REDIRECT_ORIGINS); "
            f"{errors.shown(origin, 200)} is not one",
            reason=REASON,
            field=field_name,
        )
    # The scheme is case-blind (RFC 3986) and so is the allow-list, but the provider's URL
    # check is not: send the scheme in lower case (the rest as given).
    return parts.scheme + value[len(parts.scheme) :]
