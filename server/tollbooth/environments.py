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
the settings refuse to load, naming what is wrong (`configvalues.derive_live`, which
`Settings` runs while it reads the variables). Nothing of the live environment is ever
generated: generated credentials are for a local test environment only.

Stripe marks each event with the mode of the key's account: an environment expects events whose
`livemode` is that of its Stripe key (true with a live-mode key), and refuses the others.

A service key or a token belongs to exactly one environment; the server routes each call to
the servicers of the environment that authenticated it (`tollbooth.rpc.routing`).
"""

from __future__ import annotations

from tollbooth.config import Settings
from tollbooth.configvalues import (  # noqa: F401  (the live variables' rules, re-exported)
    LIVE_KEY_PREFIXES,
    LIVE_OPTIONAL,
    LIVE_REQUIRED,
    ConfigError,
    derive_live,
    is_live_key,
)

TEST, LIVE = "test", "live"
NAMES = (TEST, LIVE)


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
    served = {name_of(settings): settings}  # test whenever live is configured
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
            + (f" (set {', '.join(LIVE_REQUIRED)})" if name == LIVE else "")
        )
    return served[name]
