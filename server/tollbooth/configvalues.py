"""The values of settings, checked and cleaned: the parsers `config.py` applies to what it reads
from the environment (integers and seconds in range, database URLs, origins, lists), the
generated local credentials, and the one error a bad value raises. No pydantic here."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# Generated credentials: variable -> (file name, how to make one).
GENERATED = {
    "BILLING_SERVICE_KEYS": ("service-key", lambda: "sk_local_" + secrets.token_urlsafe(32)),
    "BILLING_JWT_KEYS": ("jwt-key", lambda: "local:" + secrets.token_urlsafe(48)),
    "STRIPE_WEBHOOK_SECRET": ("webhook-secret", lambda: "whsec_" + secrets.token_urlsafe(32)),
    "BILLING_OPERATOR_KEY": ("operator-key", lambda: "op_local_" + secrets.token_urlsafe(32)),
}


class ConfigError(ValueError):
    """The environment holds an unusable value."""


def local_secret(data_dir: Path, name: str) -> tuple[str, Path]:
    """The generated credential `name` of this data directory, created on first use.

    Written to a temporary file and linked into place, so concurrent first starts (several
    replicas) all end up with the one value that won.
    """
    filename, make = GENERATED[name]
    folder = data_dir / "secrets"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / filename
    if not path.exists():
        tmp = folder / f".{filename}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(make() + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    value = path.read_text().strip()
    if not value:
        raise ConfigError(f"{path} is empty; delete it to generate a new {name}")
    return value, path


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _integer(name: str, text: str, lo: int | None, hi: int | None) -> int:
    if hi is None:  # a count: any positive integer
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {text!r}")
        return value
    try:
        value = int(text)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {text[:40]!r}") from exc
    if not (lo if lo is not None else value) <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}")
    return value


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")


def _seconds(name: str, text: str, lo: int | None, hi: int | None) -> float:
    """A duration in seconds, decimals allowed (a timeout, not an amount)."""
    try:
        value = Decimal(text)
    except ArithmeticError:
        value = Decimal("NaN")
    if not value.is_finite():
        raise ConfigError(f"{name} must be a number of seconds, got {text[:40]!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{name} must be between {lo} and {hi}")
    return float(value)


def _database_url(url: str) -> None:
    """A URL SQLAlchemy can read, naming SQLite or PostgreSQL (the two the service runs on)."""
    try:
        scheme = make_url(url).get_backend_name()
    except ArgumentError:
        scheme = ""
    if scheme not in DATABASE_SCHEMES:
        raise ConfigError(
            "BILLING_DATABASE_URL must be sqlite:///PATH or postgresql://USER@HOST/DB, "
            f"got {redact_url(url)[:60]!r}"
        )


LOOPBACK_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1", "[::1]"})


def database_identity(url: str) -> tuple[str, ...]:
    """What names one database whatever the spelling: a SQLite file by its real path, a
    PostgreSQL database by server (loopback names as one, port 5432 by default) and name,
    whatever the user, driver or options. Two environments must not share it."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if path in ("", ":memory:"):
            return ("sqlite", url)
        return ("sqlite", os.path.realpath(path))
    host = (parsed.host or "").lower()
    host = "loopback" if host in LOOPBACK_HOSTS else host
    return ("postgresql", host, str(parsed.port or 5432), parsed.database or "")


def redirect_origins(origins: Any, variable: str = "BILLING_REDIRECT_ORIGINS") -> tuple[str, ...]:
    """Origins cleaned (BILLING_REDIRECT_ORIGINS, BILLING_CORS_ORIGINS): each an http(s)
    origin, lower-cased, without a path or a trailing slash, as a browser's Origin header."""
    if isinstance(origins, str):
        origins = split_list(origins)
    out: list[str] = []
    for origin in origins:
        parsed = urlparse(origin.strip().rstrip("/"))
        if (
            parsed.scheme not in ("http", "https")
            or not parsed.hostname
            or parsed.username is not None
            or parsed.path
            or parsed.query
            or parsed.fragment
        ):
            raise ConfigError(
                f"{variable} entries are origins like https://app.example.com, got {origin!r}"
            )
        out.append(f"{parsed.scheme}://{parsed.netloc.lower()}")
    return tuple(out)


def split_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def redact_url(url: str) -> str:
    """Hide a password in a database URL."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def api_base(name: str, value: str) -> str:
    """Where a Stripe client sends its requests: an http(s) URL with a host (and maybe a port
    and a path), its trailing slash dropped. Anything else would only fail at the first
    provider call, as a connection error far from the variable that caused it."""
    text = str(value).strip()
    shown = repr(text[:60])
    problem = (
        f"{name} must be an http(s) URL such as https://api.stripe.com or http://127.0.0.1:12111"
    )
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ConfigError(f"{problem}; it holds a blank or control character")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{problem}, got {shown}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{problem}, got {shown}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{problem} without user or password (the key authenticates)")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ConfigError(f"{problem} without a query or fragment, got {shown}")
    if port == 0:
        raise ConfigError(f"{problem}; port 0 is no port, got {shown}")
    return text.rstrip("/")


LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")
STRIPE_KEY_RE = re.compile(r"(?:sk|rk)_(?:test|live)_[A-Za-z0-9_]+")
_NOT_A_SECRET_KEY = {
    "pk_": "a publishable key (for browsers); use the secret key beside it",
    "whsec_": "a webhook signing secret; that is STRIPE_WEBHOOK_SECRET",
}


def stripe_key(name: str, value: str) -> str:
    """A Stripe secret or restricted key (sk_test_, sk_live_, rk_test_, rk_live_ and then
    letters, digits or _): anything else failed only at the first provider call, as an
    authentication error. The refusal never shows the value (a secret)."""
    key = str(value).strip()
    if STRIPE_KEY_RE.fullmatch(key):
        return key
    hint = next((h for p, h in _NOT_A_SECRET_KEY.items() if key.startswith(p)), "")
    raise ConfigError(
        f"{name} must be a Stripe secret or restricted key (sk_test_..., sk_live_..., "
        f"rk_test_... or rk_live_..., letters, digits and _ only)"
        + (f"; this is {hint}" if hint else "")
    )


# The live environment's variables (`tollbooth.environments`): all of LIVE_REQUIRED are needed
# once one of them is set.
LIVE_REQUIRED = (
    "BILLING_LIVE_DATABASE_URL",
    "BILLING_LIVE_STRIPE_API_KEY",
    "BILLING_LIVE_STRIPE_WEBHOOK_SECRET",
    "BILLING_LIVE_SERVICE_KEYS",
    "BILLING_LIVE_JWT_KEYS",
)
LIVE_OPTIONAL = ("BILLING_LIVE_JWT_SIGNING_KID", "BILLING_LIVE_STRIPE_API_BASE")


def is_live_key(key: str) -> bool:
    return key.startswith(LIVE_KEY_PREFIXES)


def _listed(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    return split_list(value) if isinstance(value, str) else tuple(value)


def jwt_key_pairs(name: str, entries: tuple[str, ...]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for pair in entries:
        kid, sep, secret = pair.partition(":")
        if not sep or not kid or len(secret) < 32:
            raise ConfigError(f"{name} entries are KID:SECRET, the secret at least 32 characters")
        keys[kid] = secret
    return keys


def derive_live(values: dict[str, Any]) -> None:
    """Check the live variables in `values` (keyed by variable, the test ones already derived)
    and normalise them in place; ConfigError when live is half-configured or shares anything
    with test."""
    given = {name for name in (*LIVE_REQUIRED, *LIVE_OPTIONAL) if values.get(name)}
    if not given:
        values["BILLING_LIVE_JWT_KEYS"] = {}
        return
    missing = [name for name in LIVE_REQUIRED if name not in given]
    if missing:
        raise ConfigError(
            "the live environment is half-configured: "
            f"{', '.join(sorted(given))} set but {', '.join(missing)} not; set all of "
            f"{', '.join(LIVE_REQUIRED)}, or none to serve the test environment only"
        )
    url = str(values["BILLING_LIVE_DATABASE_URL"]).strip()
    try:
        _database_url(url)
    except ConfigError:
        raise ConfigError(
            "BILLING_LIVE_DATABASE_URL must be sqlite:///PATH or postgresql://USER@HOST/DB"
        ) from None
    if database_identity(url) == database_identity(str(values["BILLING_DATABASE_URL"]).strip()):
        raise ConfigError(
            "BILLING_LIVE_DATABASE_URL is the test environment's database "
            "(BILLING_DATABASE_URL): each environment needs its own"
        )
    live_base = values.get("BILLING_LIVE_STRIPE_API_BASE") or ""
    live_base = api_base("BILLING_LIVE_STRIPE_API_BASE", live_base) if live_base else ""
    key = stripe_key("BILLING_LIVE_STRIPE_API_KEY", values["BILLING_LIVE_STRIPE_API_KEY"])
    if not is_live_key(key) and not values.get("BILLING_LIVE_STRIPE_API_BASE"):
        raise ConfigError(
            "BILLING_LIVE_STRIPE_API_KEY must be a live-mode Stripe key "
            "(sk_live_... or rk_live_...); a test-mode key only with "
            "BILLING_LIVE_STRIPE_API_BASE naming a Stripe stand-in"
        )
    if key == str(values.get("STRIPE_API_KEY") or ""):
        raise ConfigError("BILLING_LIVE_STRIPE_API_KEY is the test environment's STRIPE_API_KEY")
    if is_live_key(str(values.get("STRIPE_API_KEY") or "")):
        raise ConfigError(
            "STRIPE_API_KEY is a live-mode key while the live environment is configured: "
            "STRIPE_API_KEY is the test environment's key (or unset, for the sandbox)"
        )
    service_keys = _listed(values["BILLING_LIVE_SERVICE_KEYS"])
    if not service_keys or any(len(k) < 16 for k in service_keys):
        raise ConfigError("BILLING_LIVE_SERVICE_KEYS entries must be at least 16 characters")
    test_keys = {*values.get("BILLING_SERVICE_KEYS", ()), values.get("BILLING_OPERATOR_KEY")}
    if test_keys & set(service_keys):
        raise ConfigError(
            "BILLING_LIVE_SERVICE_KEYS shares a key with BILLING_SERVICE_KEYS or "
            "BILLING_OPERATOR_KEY: a key belongs to one environment"
        )
    live_jwt = jwt_key_pairs("BILLING_LIVE_JWT_KEYS", _listed(values["BILLING_LIVE_JWT_KEYS"]))
    if set(live_jwt.values()) & set(values.get("BILLING_JWT_KEYS", {}).values()):
        raise ConfigError(
            "BILLING_LIVE_JWT_KEYS shares a signing secret with BILLING_JWT_KEYS: "
            "a token belongs to one environment"
        )
    signing = str(values.get("BILLING_LIVE_JWT_SIGNING_KID") or next(iter(live_jwt)))
    if signing not in live_jwt:
        raise ConfigError(
            f"BILLING_LIVE_JWT_SIGNING_KID {signing!r} is not in BILLING_LIVE_JWT_KEYS"
        )
    secrets = _listed(values["BILLING_LIVE_STRIPE_WEBHOOK_SECRET"])
    if set(secrets) & set(values.get("STRIPE_WEBHOOK_SECRET") or ()):
        raise ConfigError(
            "BILLING_LIVE_STRIPE_WEBHOOK_SECRET shares a secret with STRIPE_WEBHOOK_SECRET: "
            "webhooks are routed by the secret that verifies them"
        )
    values.update(
        {
            "BILLING_LIVE_DATABASE_URL": url,
            "BILLING_LIVE_STRIPE_API_KEY": key,
            "BILLING_LIVE_SERVICE_KEYS": service_keys,
            "BILLING_LIVE_JWT_KEYS": live_jwt,
            "BILLING_LIVE_JWT_SIGNING_KID": signing,
            "BILLING_LIVE_STRIPE_WEBHOOK_SECRET": secrets,
            "BILLING_LIVE_STRIPE_API_BASE": live_base,
        }
    )


def dialable(host: str) -> str:
    """The address a client on this machine dials for a server bound to `host`: a wildcard
    bind (every interface) is reached on loopback; any other address as it is."""
    host = host.strip().strip("[]")
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def dial_url(host: str, port: int) -> str:
    """`http://HOST:PORT` for a local server bound to `host` (an IPv6 address in brackets)."""
    address = dialable(host)
    return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"
