"""Configuration from the environment, with working local defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# Local-only defaults: they let `make run` work on a fresh machine. Each is
# reported as a default at start so nobody runs production on them unawares.
DEV_SERVICE_KEY = "dev-service-key"
DEV_WEBHOOK_SECRET = "whsec_sandbox_local_only"
DEV_JWT_KEY = "dev:local-only-jwt-signing-key-change-me-0123456789"

REPO_ROOT = Path(__file__).resolve().parents[2]


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _list(env: dict[str, str], name: str, default: str = "") -> list[str]:
    raw = env.get(name, default)
    return [item.strip() for item in raw.split(",") if item.strip()]


class ConfigError(ValueError):
    """The environment holds an unusable value."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    service_keys: tuple[str, ...]
    jwt_keys: dict[str, str]
    jwt_signing_kid: str
    jwt_issuer: str
    jwt_audience: str
    token_ttl_default: int
    token_ttl_max: int
    stripe_api_key: str
    webhook_secrets: tuple[str, ...]
    webhook_tolerance_sec: int
    grpc_host: str
    grpc_port: int
    rest_port: int
    sidecar_port: int
    envoy_admin_port: int
    cors_origins: tuple[str, ...]
    max_body_bytes: int
    grpc_workers: int
    defaults_used: tuple[str, ...] = field(default=())

    @property
    def grpc_target(self) -> str:
        host = "127.0.0.1" if self.grpc_host in ("0.0.0.0", "[::]", "") else self.grpc_host
        return f"{host}:{self.grpc_port}"

    @property
    def sandbox(self) -> bool:
        return not self.stripe_api_key

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        used: list[str] = []

        def default(name: str, value: str) -> str:
            if not env.get(name, "").strip():
                used.append(name)
                return value
            return env[name].strip()

        database_url = default(
            "BILLING_DATABASE_URL", f"sqlite:///{REPO_ROOT / 'var' / 'billing.db'}"
        )
        keys = _list(env, "BILLING_SERVICE_KEYS")
        if not keys:
            used.append("BILLING_SERVICE_KEYS")
            keys = [DEV_SERVICE_KEY]
        jwt_pairs = _list(env, "BILLING_JWT_KEYS")
        if not jwt_pairs:
            used.append("BILLING_JWT_KEYS")
            jwt_pairs = [DEV_JWT_KEY]
        jwt_keys: dict[str, str] = {}
        for pair in jwt_pairs:
            kid, sep, secret = pair.partition(":")
            if not sep or not kid or len(secret) < 32:
                raise ConfigError(
                    "BILLING_JWT_KEYS entries are KID:SECRET, the secret at least 32 characters"
                )
            jwt_keys[kid] = secret
        signing_kid = env.get("BILLING_JWT_SIGNING_KID", "").strip() or next(iter(jwt_keys))
        if signing_kid not in jwt_keys:
            raise ConfigError(f"BILLING_JWT_SIGNING_KID {signing_kid!r} is not in BILLING_JWT_KEYS")
        stripe_key = env.get("STRIPE_API_KEY", "").strip()
        secrets = _list(env, "STRIPE_WEBHOOK_SECRET")
        if not secrets and not stripe_key:
            # Sandbox mode only: the sandbox signs its events with this secret.
            used.append("STRIPE_WEBHOOK_SECRET")
            secrets = [DEV_WEBHOOK_SECRET]
        ttl_max = _int(env, "BILLING_TOKEN_TTL_MAX_SEC", 3600)
        settings = cls(
            database_url=database_url,
            service_keys=tuple(keys),
            jwt_keys=jwt_keys,
            jwt_signing_kid=signing_kid,
            jwt_issuer=env.get("BILLING_JWT_ISSUER", "").strip() or "tollbooth",
            jwt_audience=env.get("BILLING_JWT_AUDIENCE", "").strip() or "billing-api",
            token_ttl_default=min(900, ttl_max),
            token_ttl_max=ttl_max,
            stripe_api_key=stripe_key,
            webhook_secrets=tuple(secrets),
            webhook_tolerance_sec=_int(env, "STRIPE_WEBHOOK_TOLERANCE_SEC", 300),
            grpc_host=env.get("BILLING_GRPC_HOST", "").strip() or "127.0.0.1",
            grpc_port=_int(env, "BILLING_GRPC_PORT", 50051),
            rest_port=_int(env, "BILLING_REST_PORT", 8080),
            sidecar_port=_int(env, "BILLING_SIDECAR_PORT", 8090),
            envoy_admin_port=_int(env, "BILLING_ENVOY_ADMIN_PORT", 9901),
            cors_origins=tuple(
                _list(env, "BILLING_CORS_ORIGINS", "http://localhost:3000,http://127.0.0.1:3000")
            ),
            max_body_bytes=_int(env, "BILLING_MAX_BODY_BYTES", 1_048_576),
            grpc_workers=_int(env, "BILLING_GRPC_WORKERS", 32),
            defaults_used=tuple(used),
        )
        if settings.token_ttl_max < 60:
            raise ConfigError("BILLING_TOKEN_TTL_MAX_SEC must be at least 60")
        return settings

    def describe(self) -> list[tuple[str, str]]:
        """Rows for the start-up banner. Secrets are never shown, except the dev defaults."""

        def mark(name: str, shown: str) -> str:
            return f"{shown}  (local default)" if name in self.defaults_used else shown

        keys = (
            f"{DEV_SERVICE_KEY}"
            if "BILLING_SERVICE_KEYS" in self.defaults_used
            else f"{len(self.service_keys)} key(s) configured"
        )
        secret = (
            DEV_WEBHOOK_SECRET
            if "STRIPE_WEBHOOK_SECRET" in self.defaults_used
            else f"{len(self.webhook_secrets)} secret(s) configured"
        )
        return [
            ("BILLING_DATABASE_URL", mark("BILLING_DATABASE_URL", redact_url(self.database_url))),
            ("BILLING_SERVICE_KEYS", mark("BILLING_SERVICE_KEYS", keys)),
            (
                "BILLING_JWT_KEYS",
                mark(
                    "BILLING_JWT_KEYS",
                    f"kids {sorted(self.jwt_keys)}, signing {self.jwt_signing_kid}",
                ),
            ),
            (
                "STRIPE_API_KEY",
                "set (real Stripe)" if self.stripe_api_key else "unset (sandbox provider)",
            ),
            ("STRIPE_WEBHOOK_SECRET", mark("STRIPE_WEBHOOK_SECRET", secret)),
            ("BILLING_GRPC_PORT", str(self.grpc_port)),
            ("BILLING_REST_PORT", str(self.rest_port)),
            ("BILLING_SIDECAR_PORT", str(self.sidecar_port)),
            ("BILLING_ENVOY_ADMIN_PORT", str(self.envoy_admin_port)),
        ]


def redact_url(url: str) -> str:
    """Hide a password in a database URL."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url
