"""The test and live environments: one deployment serves both, kept fully apart.

The **test** environment is the one the service always had: BILLING_DATABASE_URL,
BILLING_SERVICE_KEYS, BILLING_JWT_KEYS, STRIPE_API_KEY (unset: the local sandbox) and
STRIPE_WEBHOOK_SECRET. With nothing else configured it is the only one, exactly as before.

The **live** environment is off unless configured, with variables of its own:

    BILLING_LIVE_DATABASE_URL           its own database
    BILLING_LIVE_STRIPE_API_KEY         a live-mode key (sk_live_... or rk_live_...)
    BILLING_LIVE_STRIPE_WEBHOOK_SECRET  the secret of its Stripe webhook endpoint (comma-separated
                                        during a rotation)
    BILLING_LIVE_SERVICE_KEYS           its backends' keys (comma-separated, 16+ characters)
    BILLING_LIVE_JWT_KEYS               its token signing keys (KID:SECRET, 32+ characters)
    BILLING_LIVE_JWT_SIGNING_KID        optional: which one signs (default: the first)
    BILLING_LIVE_STRIPE_API_BASE        optional: where its Stripe client sends requests (a
                                        Stripe stand-in, such as the sandbox, may take a
                                        test-mode key: nothing else does)

Once any of the five required ones is set, all five must be, and none may be shared with the
test environment (the same database, key or secret in both would join what must stay apart):
the settings refuse to load, naming what is wrong. Nothing of the live environment is ever
generated: generated credentials are for a local test environment only.

Stripe marks each event with the mode of the key's account: an environment expects events whose
`livemode` is that of its Stripe key (true with a live-mode key), and refuses the others.

A service key or a token belongs to exactly one environment; the server routes each call to
the servicers of the environment that authenticated it (`tollbooth.rpc.routing`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tollbooth.configvalues import ConfigError, _database_url, split_list

if TYPE_CHECKING:
    from tollbooth.config import Settings

TEST, LIVE = "test", "live"
NAMES = (TEST, LIVE)
LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")

# The variables that make up the live environment; all are needed once one is set.
REQUIRED = (
    "BILLING_LIVE_DATABASE_URL",
    "BILLING_LIVE_STRIPE_API_KEY",
    "BILLING_LIVE_STRIPE_WEBHOOK_SECRET",
    "BILLING_LIVE_SERVICE_KEYS",
    "BILLING_LIVE_JWT_KEYS",
)
OPTIONAL = ("BILLING_LIVE_JWT_SIGNING_KID", "BILLING_LIVE_STRIPE_API_BASE")


def is_live_key(key: str) -> bool:
    return key.startswith(LIVE_KEY_PREFIXES)


def _listed(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    return split_list(value) if isinstance(value, str) else tuple(value)


def jwt_keys(name: str, entries: tuple[str, ...]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for pair in entries:
        kid, sep, secret = pair.partition(":")
        if not sep or not kid or len(secret) < 32:
            raise ConfigError(f"{name} entries are KID:SECRET, the secret at least 32 characters")
        keys[kid] = secret
    return keys


def derive(values: dict[str, Any]) -> None:
    """Check the live variables in `values` (keyed by variable, the test ones already derived)
    and normalise them in place; ConfigError when live is half-configured or shares anything
    with test."""
    given = {name for name in (*REQUIRED, *OPTIONAL) if values.get(name)}
    if not given:
        values["BILLING_LIVE_JWT_KEYS"] = {}
        return
    missing = [name for name in REQUIRED if name not in given]
    if missing:
        raise ConfigError(
            "the live environment is half-configured: "
            f"{', '.join(sorted(given))} set but {', '.join(missing)} not; set all of "
            f"{', '.join(REQUIRED)}, or none to serve the test environment only"
        )
    url = str(values["BILLING_LIVE_DATABASE_URL"]).strip()
    try:
        _database_url(url)
    except ConfigError:
        raise ConfigError(
            "BILLING_LIVE_DATABASE_URL must be sqlite:///PATH or postgresql://USER@HOST/DB"
        ) from None
    if url == str(values["BILLING_DATABASE_URL"]).strip():
        raise ConfigError(
            "BILLING_LIVE_DATABASE_URL is the test environment's database "
            "(BILLING_DATABASE_URL): each environment needs its own"
        )
    key = str(values["BILLING_LIVE_STRIPE_API_KEY"]).strip()
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
    live_jwt = jwt_keys("BILLING_LIVE_JWT_KEYS", _listed(values["BILLING_LIVE_JWT_KEYS"]))
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
            "BILLING_LIVE_STRIPE_API_BASE": str(
                values.get("BILLING_LIVE_STRIPE_API_BASE") or ""
            ).rstrip("/"),
        }
    )


def name_of(settings: Settings) -> str:
    """The environment the configured (unprefixed) settings serve: test, unless the one
    environment of a deployment without BILLING_LIVE_* runs on a live-mode Stripe key."""
    return LIVE if is_live_key(settings.stripe_api_key) else TEST


def livemode(settings: Settings) -> bool:
    """The `livemode` of the events an environment's Stripe account sends."""
    return is_live_key(settings.stripe_api_key)


def live_view(settings: Settings) -> Settings | None:
    """The live environment's settings (everything else as configured), or None when it is
    not configured."""
    if not settings.live_database_url:
        return None
    return settings.model_copy(
        update={
            "database_url": settings.live_database_url,
            "service_keys": settings.live_service_keys,
            "jwt_keys": settings.live_jwt_keys,
            "jwt_signing_kid": settings.live_jwt_signing_kid,
            "stripe_api_key": settings.live_stripe_api_key,
            "stripe_api_base": settings.live_stripe_api_base,
            "webhook_secrets": settings.live_webhook_secrets,
            "live_database_url": "",  # a view serves one environment
            "generated": {},
            "defaults_used": (),
        }
    )


def of(settings: Settings) -> dict[str, Settings]:
    """Every environment served, by name: the configured one first, then live if configured."""
    served = {name_of(settings): settings}  # test whenever live is configured (derive)
    live = live_view(settings)
    if live is not None:
        served[LIVE] = live
    return served


def view(settings: Settings, name: str) -> Settings:
    """One environment's settings by name; ConfigError when it is not served."""
    served = of(settings)
    if name not in served:
        raise ConfigError(
            f"the {name} environment is not configured"
            + (f" (set {', '.join(REQUIRED)})" if name == LIVE else "")
        )
    return served[name]
