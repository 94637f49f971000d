"""`tollbooth sandbox` (alias `python -m tollbooth.sandbox`): the sandbox on its own, configured
by `STRIPE_WEBHOOK_SECRET` and `BILLING_SANDBOX_*` (tollbooth.config.SandboxSettings)."""

from __future__ import annotations

import sys

import click

from tollbooth import logs
from tollbooth.config import ConfigError, SandboxSettings
from tollbooth.sandbox.config import SandboxConfig, secret_of


@click.command(
    "sandbox",
    help=(
        "run the Stripe sandbox on its own (STRIPE_WEBHOOK_SECRET, BILLING_SANDBOX_*); its "
        "events go to Envoy's webhook path (BILLING_REST_HOST, BILLING_REST_PORT) as for run"
    ),
)
def sandbox_alone() -> int:
    from tollbooth.sandbox.app import serve

    logs.setup("sandbox", stream="stdout")
    try:
        settings = SandboxSettings.from_env()
    except ConfigError as exc:
        print(f"sandbox configuration: {exc}", file=sys.stderr)
        return 2
    secret = secret_of(settings)
    if not secret:
        print(
            "STRIPE_WEBHOOK_SECRET is not set: the sandbox signs every event with it and "
            "refuses to start without one",
            file=sys.stderr,
        )
        return 2
    try:
        config = SandboxConfig.from_settings(settings, secret)
    except ValueError as exc:
        print(f"sandbox configuration: {exc}", file=sys.stderr)
        return 2
    serve(config)
    return 0
