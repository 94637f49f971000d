"""Sandbox settings: where it listens, where it keeps state, where it delivers events.

The variables (`BILLING_SANDBOX_*`, `STRIPE_WEBHOOK_SECRET`) are read with every other setting,
by `tollbooth.config.SandboxSettings` (a section of `Settings`); this module turns them into
the sandbox's configuration, with the defaults of the stack (`SandboxConfig.for_stack`) or of
the sandbox run alone (`SandboxConfig.from_settings`).

Fault injection syntax (env `BILLING_SANDBOX_FAULTS`), comma-separated `name=value` pairs:

- `duplicate=P`   each successful delivery is sent once more with probability P (same event id);
- `shuffle=1`     (or 0) due deliveries are sent in a random order instead of creation order;
- `delay_ms=A-B`  wait a random A..B milliseconds before each delivery attempt (or `delay_ms=N`);
- `twin=P`        with probability P a change produces a second, distinct event (new `evt_` id,
                  same type and object), as Stripe occasionally does;
- `seed=N`        seed of the random source, for reproducible runs.

Numbers are ASCII digits only (`seed=١٢` is refused, not read as 12; so are `1_2`, `+12`,
`1e-1`); anything else fails start-up with the variable, the fault and what was expected.

Example: `duplicate=0.3,shuffle=1,delay_ms=0-200,twin=0.1,seed=42`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from tollbooth.config import DEFAULT_SANDBOX_PORT, SandboxSettings, Settings, dial_url

DEFAULT_PORT = DEFAULT_SANDBOX_PORT
# The webhook path on Envoy with the default BILLING_REST_HOST and BILLING_REST_PORT.
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8080/v1/billing/webhooks"


def _repo_root() -> Path:
    # server/tollbooth/sandbox/config.py -> repository root
    return Path(__file__).resolve().parents[3]


def default_db_path() -> Path:
    return _repo_root() / "var" / "sandbox.db"


@dataclass(frozen=True)
class Faults:
    duplicate: float = 0.0
    shuffle: bool = False
    delay_ms: tuple[int, int] = (0, 0)
    twin: float = 0.0
    seed: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> Faults:
        """Parse the documented `name=value,...` syntax; raise ValueError on anything else."""
        faults = cls()
        if not text or not text.strip():
            return faults
        for part in text.split(","):
            name, sep, value = part.strip().partition("=")
            name, value = name.strip(), value.strip()
            if not sep or not value:
                raise ValueError(f"fault {part.strip()!r}: expected name=value")
            try:
                if name == "duplicate":
                    faults = replace(faults, duplicate=_probability(value))
                elif name == "twin":
                    faults = replace(faults, twin=_probability(value))
                elif name == "shuffle":
                    faults = replace(faults, shuffle=_switch(value))
                elif name == "delay_ms":
                    lo, dash, hi = value.partition("-")
                    low, high = _whole(lo), _whole(hi) if dash else _whole(lo)
                    if low < 0 or high < low or high > 60_000:
                        raise ValueError("delay_ms must be N or A-B with 0 <= A <= B <= 60000")
                    faults = replace(faults, delay_ms=(low, high))
                elif name == "seed":
                    faults = replace(faults, seed=_whole(value))
                else:
                    raise ValueError("unknown fault")
            except ValueError as exc:
                raise ValueError(f"fault {part.strip()!r}: {exc}") from None
        return faults

    @property
    def active(self) -> bool:
        return bool(self.duplicate or self.shuffle or self.delay_ms[1] or self.twin)


# ASCII digits only: int() and float() also read "١٢" (Arabic-Indic), "１２" (full-width),
# "1_2", "+12" and "1e-1", which would start a run on values nobody meant.
_WHOLE = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_SWITCH = {"1": True, "true": True, "yes": True, "on": True}
_SWITCH.update({"0": False, "false": False, "no": False, "off": False})


def _whole(value: str) -> int:
    if not _WHOLE.fullmatch(value):
        raise ValueError("expected ASCII digits 0-9")
    return int(value)


def _switch(value: str) -> bool:
    try:
        return _SWITCH[value.lower()]
    except KeyError:
        raise ValueError("expected 1 or 0 (true/false, yes/no, on/off)") from None


def _probability(value: str) -> float:
    if not _DECIMAL.fullmatch(value):
        raise ValueError("expected a decimal number of ASCII digits within 0..1")
    p = float(value)
    if not 0.0 <= p <= 1.0:
        raise ValueError("probability must be within 0..1")
    return p


@dataclass(frozen=True)
class SandboxConfig:
    webhook_secret: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db_path: Path = field(default_factory=default_db_path)
    # Empty string: keep events (listable through the API) but deliver nothing.
    webhook_url: str = DEFAULT_WEBHOOK_URL
    faults: Faults = field(default_factory=Faults)
    # Base URL printed in hosted page links; defaults to http://host:port.
    public_url: str | None = None
    # Delivery retries: first retry after retry_base_sec, doubling up to retry_max_sec,
    # giving up after give_up_sec (Stripe: three days).
    retry_base_sec: float = 1.0
    retry_max_sec: float = 300.0
    give_up_sec: float = 3 * 24 * 3600.0
    delivery_timeout_sec: float = 10.0
    max_body_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if not self.webhook_secret:
            raise ValueError("the sandbox needs a webhook secret to sign events")

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        return dial_url(self.host, self.port)

    @classmethod
    def from_settings(
        cls,
        settings: SandboxSettings,
        webhook_secret: str,
        *,
        db_default: Path | None = None,
    ) -> SandboxConfig:
        """The sandbox of these settings; unset values take the defaults given. Events go to
        BILLING_SANDBOX_WEBHOOK_URL, else to the webhook path on Envoy as `make run` has it
        (BILLING_REST_HOST, BILLING_REST_PORT), run alone or not."""
        retry = settings.sandbox_retry_base_ms
        try:
            faults = Faults.parse(settings.sandbox_faults)
        except ValueError as exc:
            raise ValueError(f"BILLING_SANDBOX_FAULTS: {exc}") from None
        return cls(
            webhook_secret=webhook_secret,
            host=settings.sandbox_host,
            port=settings.sandbox_port,
            db_path=Path(settings.sandbox_db)
            if settings.sandbox_db
            else db_default or default_db_path(),
            webhook_url=settings.webhook_url
            if settings.sandbox_webhook_url is None
            else settings.sandbox_webhook_url,
            faults=faults,
            public_url=settings.sandbox_public_url or None,
            retry_base_sec=retry / 1000.0 if retry is not None else 1.0,
        )

    @classmethod
    def for_stack(cls, settings: Settings) -> SandboxConfig:
        """The sandbox of the stack: its state in the data directory, its events signed with
        the server's webhook secret and delivered to the webhook path on Envoy."""
        return cls.from_settings(
            settings,
            settings.webhook_secrets[0],
            db_default=settings.data_dir / "sandbox.db",
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str], webhook_secret: str) -> SandboxConfig:
        """The sandbox run alone, configured by the mapping `env` (`BILLING_SANDBOX_*`)."""
        return cls.from_settings(SandboxSettings.from_env(env), webhook_secret)


def secret_from_env(env: Mapping[str, str]) -> str | None:
    """First entry of STRIPE_WEBHOOK_SECRET (comma-separated during a rotation)."""
    return secret_of(SandboxSettings.from_env(env))


def secret_of(settings: SandboxSettings) -> str | None:
    return settings.webhook_secrets[0] if settings.webhook_secrets else None
