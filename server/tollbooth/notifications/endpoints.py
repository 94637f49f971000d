"""Endpoints: the company's URLs that notifications are POSTed to, and their secrets.

A secret is `whsec_` + base64 of 24 random bytes (the Standard Webhooks format). It is shown
once, when created or rotated; after a rotation the old secret keeps signing beside the new
one (the `webhook-signature` header carries both) for `PREVIOUS_SECRET_TTL`.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from sqlalchemy.orm import Session

from tollbooth import errors, paging
from tollbooth.db.models import NotificationEndpoint, NotificationOutbox
from tollbooth.ids import new_id
from tollbooth.notifications import repository
from tollbooth.notifications.envelope import KNOWN_TYPES, internal_type, public_type

PREVIOUS_SECRET_TTL = dt.timedelta(hours=24)
# At most this many replaced secrets sign beside the current one (a burst of rotations must
# not grow every message's signature header without bound): past it, the oldest stop early.
MAX_REPLACED = 5
MAX_URL = 2000
MAX_DESCRIPTION = 1000
MAX_TYPES = len(KNOWN_TYPES)
# What reads show in place of the password of a URL's `user:password@` (HTTP Basic for the
# receiver, which delivery still sends).
PASSWORD_SHOWN = "***"
UPDATABLE = ("url", "description", "event_types")
# Paths an update mask may name and that change nothing (AIP-203), as on every other resource:
# the identifier and the output-only fields, which change only through their own transitions
# (disable, enable, rotate). A client sending back what it read (the implied mask) names them.
OUTPUT_ONLY = (
    "endpoint_id",
    "enabled",
    "disabled_reason",
    "failing_since",
    "previous_secret_expire_time",
    "create_time",
    "update_time",
)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _replaced(endpoint: NotificationEndpoint, now: dt.datetime) -> list[tuple[str, dt.datetime]]:
    """Every secret a rotation replaced that still signs at `now`, newest first: the last
    rotation's (`previous_secret`), then earlier rotations' (`earlier_secrets`)."""
    out: list[tuple[str, dt.datetime]] = []
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and now < expires:
        out.append((endpoint.previous_secret, expires))
    for secret, until in endpoint.earlier_secrets or []:
        at = dt.datetime.fromisoformat(until)
        if now < at:
            out.append((secret, at))
    return out[:MAX_REPLACED]


def signing_secrets(endpoint: NotificationEndpoint, now: dt.datetime) -> list[str]:
    """The secrets that sign a message now: the current one, and each one a rotation replaced
    in the last 24 hours (at most `MAX_REPLACED`, newest first)."""
    return [endpoint.secret, *(secret for secret, _ in _replaced(endpoint, now))]


@dataclass(frozen=True)
class Fields:
    url: str = ""
    description: str = ""
    event_types: tuple[str, ...] = ()


HOST_FORBIDDEN = frozenset('%<>"{}|\\^`')


def clean_url(url: str) -> str:
    url = url.strip()
    if not url:
        raise errors.required("url")
    if len(url) > MAX_URL:
        raise errors.invalid(f"url is longer than {MAX_URL} characters", field="url")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise errors.invalid("url is not a URL", reason="URL_INVALID", field="url") from exc
    if "\\" in parts.netloc or parts.netloc.count("@") > 1:
        # Parsers disagree on where such a host starts: WHATWG ones (browsers, proxies) read
        # '\\' as '/' and so `http://127.0.0.1\\@evil.com/` as host 127.0.0.1, Python's as
        # evil.com; with two '@', which one ends the user name depends on the parser. A real
        # user name or password has them percent-encoded (%5C, %40).
        raise errors.invalid(
            "url's authority holds a '\\' or a second '@' (percent-encode them in a user name "
            "or password)",
            reason="URL_INVALID",
            field="url",
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.invalid(
            "url must be an http or https URL with a host", reason="URL_INVALID", field="url"
        )
    if any(c.isspace() or not c.isprintable() or c in HOST_FORBIDDEN for c in parts.hostname):
        # urlsplit and httpx let these through, and no resolver takes them: every delivery
        # would fail (a '%' escape in a host is never decoded; an IPv6 zone id is local).
        raise errors.invalid(
            "url's host holds a space, a '%' or another character no host name has",
            reason="URL_INVALID",
            field="url",
        )
    problem = _host_name_problem(parts.hostname) or _rest_problem(url, parts.fragment)
    if problem:
        raise errors.invalid(problem, reason="URL_INVALID", field="url")
    try:
        sendable(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise errors.invalid(
            "url cannot be sent to (bad port, character or host name)",
            reason="URL_INVALID",
            field="url",
        ) from exc
    if parts.password and unquote(parts.password) == PASSWORD_SHOWN:
        raise errors.invalid(
            f"url's password is {PASSWORD_SHOWN}, what reads show in place of one: give the "
            "password, or the url exactly as read to keep it",
            reason="URL_INVALID",
            field="url",
        )
    return url


def _host_name_problem(host: str) -> str:
    """What no resolver takes in a host name (not an IP literal): over 253 characters, a label
    empty or over 63, or one starting or ending with '-' (RFC 1123), measured in the ASCII
    form IDNA gives a non-ASCII name ("" when it is fine or IDNA refuses it: `sendable` says)."""
    if ":" in host or host.replace(".", "").isdigit():
        return ""  # an IP literal (httpx checks it)
    try:
        name = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return ""
    name = name[:-1] if name.endswith(".") else name  # the root's dot
    if len(name) > 253:
        return "url's host name is longer than 253 characters"
    for label in name.split("."):
        if not label or len(label) > 63:
            return "url's host name has an empty label or one over 63 characters"
        if label.startswith("-") or label.endswith("-"):
            return f"url's host name label {errors.shown(label)} starts or ends with '-'"
    return ""


def _rest_problem(url: str, fragment: str) -> str:
    """A space anywhere (a receiver's server reads the request line up to it: percent-encode
    it as %20), or a fragment (never sent: the receiver would not get what it names)."""
    if any(c.isspace() for c in url):
        return "url holds a space (percent-encode it as %20)"
    if fragment or url.endswith("#"):
        return "url has a fragment ('#...'), which is never sent to the receiver"
    return ""


def shown_url(url: str) -> str:
    """`url` as reads show it: the password of its userinfo replaced by `***` (the user name,
    host, path and query as they are)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    start = url.find(parts.netloc)
    shown = f"{user}:{PASSWORD_SHOWN}@{hostport}"
    return url[:start] + shown + url[start + len(parts.netloc) :]


def sendable(url: str) -> None:
    """Raise what sending to `url` would raise before any network: the port's range (0 is no
    port to connect to), httpx's own parse (control characters, a non-numeric port, a host
    IDNA refuses) and the resolver's host encoding (an empty or over-long label)."""
    if urlsplit(url).port == 0:
        raise ValueError("port 0")
    target = httpx.URL(url)
    _ = target.host
    target.raw_host.decode("ascii").encode("idna")


def wants(endpoint: NotificationEndpoint, row: NotificationOutbox) -> bool:
    """Whether the endpoint takes the notification's type (no types: every type)."""
    return wants_type(endpoint, public_type(row.type))


def wants_type(endpoint: NotificationEndpoint, public: str) -> bool:
    types = endpoint.event_types or []
    return not types or public in types


def left_out(public: str) -> str:
    """The error of a pending delivery given up because the endpoint no longer wants it."""
    return f"not sent: the endpoint's event_types leave out {public}"


def clean_types(types: Sequence[str]) -> list[str]:
    out: list[str] = []
    for t in types:
        if t not in KNOWN_TYPES:
            raise errors.invalid(
                f"event_types: unknown type {errors.shown(t)}; known: {', '.join(KNOWN_TYPES)}",
                reason="EVENT_TYPE_UNKNOWN",
                field="event_types",
            )
        if t not in out:
            out.append(t)
    return out


def clean_description(text: str) -> str:
    if len(text) > MAX_DESCRIPTION:
        raise errors.invalid(
            f"description is longer than {MAX_DESCRIPTION} characters", field="description"
        )
    return text


def create(session: Session, fields: Fields, now: dt.datetime) -> tuple[NotificationEndpoint, str]:
    endpoint = NotificationEndpoint(
        id=new_id("nep"),
        url=clean_url(fields.url),
        description=clean_description(fields.description),
        event_types=clean_types(fields.event_types),
        secret=new_secret(),
        enabled=True,
        disabled_reason="",
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    session.flush()
    return endpoint, endpoint.secret


def get(
    session: Session, endpoint_id: str, *, lock: bool = False, share: bool = False
) -> NotificationEndpoint:
    """The endpoint, or NOT_FOUND; `lock`/`share` as `repository.get_endpoint`'s."""
    if not endpoint_id:
        raise errors.required("endpoint_id")
    endpoint = repository.get_endpoint(session, endpoint_id, lock=lock, share=share)
    if endpoint is None:
        raise errors.not_found("notification endpoint", endpoint_id)
    return endpoint  # type: ignore[no-any-return]


def keyset(requested_size: int) -> paging.Keyset[Any]:
    return paging.Keyset.of(
        "notification-endpoints",
        (paging.Micros(), paging.Text()),
        lambda e: (e.created_at, e.id),
        requested_size,
    )


def list_page(
    session: Session, page_size: int, page_token: str
) -> paging.Page[NotificationEndpoint]:
    ks = keyset(page_size)
    rows = repository.list_endpoints(session, ks.after(page_token), ks.limit)
    return ks.page(rows)


def update(
    session: Session, endpoint_id: str, fields: Fields, paths: Sequence[str], now: dt.datetime
) -> NotificationEndpoint:
    named = [p.strip() for p in paths if p.strip()]
    if named == ["*"]:  # AIP-134: every updatable field
        named = list(UPDATABLE)
    unknown = [p for p in named if p not in UPDATABLE and p not in OUTPUT_ONLY]
    if unknown:
        raise errors.invalid(
            f"update_mask: {errors.shown(unknown[0])} cannot be updated; "
            f"updatable: {', '.join(UPDATABLE)}",
            reason="FIELD_INVALID",
            field="update_mask",
            path=unknown[0][:64],
        )
    paths = [p for p in named if p in UPDATABLE]
    endpoint = get(session, endpoint_id, lock=True)
    # The URL as reads show it (its password masked) keeps the stored one: a client sending
    # back what it read changes nothing (AIP-134's read-modify-write).
    if "url" in paths and fields.url.strip() != shown_url(endpoint.url):
        endpoint.url = clean_url(fields.url)
    if "description" in paths:
        endpoint.description = clean_description(fields.description)
    if "event_types" in paths:
        endpoint.event_types = clean_types(fields.event_types)
        if endpoint.event_types:
            # What is still pending of a type left out is given up, as a resend of it is
            # refused: not retried, and no longer holding back its account's next messages.
            internal = [internal_type(t) for t in endpoint.event_types]
            settled = repository.give_up_unwanted(
                session, endpoint.id, internal, now, lambda t: left_out(public_type(t))
            )
            if settled and not repository.has_pending(session, endpoint.id):
                endpoint.failing_since = None
    endpoint.updated_at = now
    session.flush()
    return endpoint


def set_enabled(
    session: Session, endpoint_id: str, enabled: bool, reason: str, now: dt.datetime
) -> NotificationEndpoint:
    endpoint = get(session, endpoint_id, lock=True)
    endpoint.enabled = enabled
    endpoint.disabled_reason = "" if enabled else reason
    # Enabled: its failure window starts afresh; disabled: nothing is attempted, so it is
    # not "failing" either (as when the delivery process disables it).
    endpoint.failing_since = None
    endpoint.updated_at = now
    session.flush()
    return endpoint


def delete(session: Session, endpoint_id: str) -> None:
    get(session, endpoint_id, lock=True)
    repository.delete_endpoint(session, endpoint_id)


def rotate(
    session: Session, endpoint_id: str, now: dt.datetime
) -> tuple[NotificationEndpoint, str]:
    endpoint = get(session, endpoint_id, lock=True)
    # The secrets replaced before keep signing until their own expiry (the last
    # MAX_REPLACED - 1 of them: with the one replaced now, MAX_REPLACED in all).
    still = _replaced(endpoint, now)[: MAX_REPLACED - 1]
    endpoint.earlier_secrets = [[secret, until.isoformat()] for secret, until in still] or None
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + PREVIOUS_SECRET_TTL
    endpoint.secret = new_secret()
    endpoint.updated_at = now
    session.flush()
    return endpoint, endpoint.secret
