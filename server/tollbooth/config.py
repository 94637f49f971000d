"""Configuration from the environment, with working local defaults.

No credential ever comes from the repository. When a service key, the JWT signing key or (in
sandbox mode) the webhook secret is not configured, a random one is generated once per data
directory (`$BILLING_DATA_DIR/secrets/`, files of mode 0600) and reused on restart, so
`make run` works with zero configuration and every replica on the machine shares them. Such
generated credentials are for loopback only: a listener on any other address refuses to start
and names the variable to set.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Generated credentials: variable -> (file name, how to make one).
GENERATED = {
    "BILLING_SERVICE_KEYS": ("service-key", lambda: "sk_local_" + secrets.token_urlsafe(32)),
    "BILLING_JWT_KEYS": ("jwt-key", lambda: "local:" + secrets.token_urlsafe(48)),
    "STRIPE_WEBHOOK_SECRET": ("webhook-secret", lambda: "whsec_" + secrets.token_urlsafe(32)),
}
MAX_JWT_LEEWAY_SEC = 300


def _int(env: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw[:40]!r}") from exc
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}")
    return value


def _list(env: dict[str, str], name: str, default: str = "") -> list[str]:
    raw = env.get(name, default)
    return [item.strip() for item in raw.split(",") if item.strip()]


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


@dataclass(frozen=True)
class Settings:
    database_url: str
    service_keys: tuple[str, ...]
    jwt_keys: dict[str, str]
    jwt_signing_kid: str
    jwt_issuer: str
    jwt_audience: str
    jwt_leeway_sec: int
    token_ttl_default: int
    token_ttl_max: int
    stripe_api_key: str
    webhook_secrets: tuple[str, ...]
    webhook_tolerance_sec: int
    grpc_host: str
    grpc_port: int
    grpc_replicas: int
    rest_host: str
    rest_port: int
    sidecar_port: int
    sandbox_port: int
    envoy_admin_port: int
    cors_origins: tuple[str, ...]
    max_body_bytes: int
    grpc_workers: int
    data_dir: Path
    # The provider: STRIPE_API_BASE overrides where the Stripe client sends requests (empty:
    # Stripe itself with a key, the local sandbox without one); timeout and network retries.
    stripe_api_base: str = ""
    stripe_timeout_sec: float = 10.0
    stripe_max_network_retries: int = 2
    defaults_used: tuple[str, ...] = field(default=())
    # Variable -> file of each credential generated for this data directory.
    generated: dict[str, Path] = field(default_factory=dict)

    @property
    def grpc_target(self) -> str:
        host = "127.0.0.1" if self.grpc_host in ("0.0.0.0", "[::]", "::", "") else self.grpc_host
        return f"{host}:{self.grpc_port}"

    @property
    def grpc_client_target(self) -> str:
        """What clients inside the stack (the sidecar) dial: every replica, round robin."""
        host = self.grpc_target.rsplit(":", 1)[0]
        if self.grpc_replicas == 1 or not _is_ip(host):
            return self.grpc_target
        return "ipv4:" + ",".join(f"{host}:{port}" for port in self.grpc_ports)

    @property
    def grpc_ports(self) -> list[int]:
        """One port per replica, from BILLING_GRPC_PORT upwards."""
        return [self.grpc_port + i for i in range(self.grpc_replicas)]

    @property
    def sandbox(self) -> bool:
        return not self.stripe_api_key

    @property
    def webhook_url(self) -> str:
        """Where Stripe (or the sandbox) delivers events: the webhook path on Envoy."""
        host = "127.0.0.1" if not is_loopback(self.rest_host) else self.rest_host
        return f"http://{host}:{self.rest_port}/v1/billing/webhooks"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        used: list[str] = []
        generated: dict[str, Path] = {}
        data_dir = Path(env.get("BILLING_DATA_DIR", "").strip() or REPO_ROOT / "var")

        def default(name: str, value: str) -> str:
            if not env.get(name, "").strip():
                used.append(name)
                return value
            return env[name].strip()

        def credential(name: str) -> list[str]:
            configured = _list(env, name)
            if configured:
                return configured
            value, path = local_secret(data_dir, name)
            generated[name] = path
            return [value]

        database_url = default("BILLING_DATABASE_URL", f"sqlite:///{data_dir / 'billing.db'}")
        keys = credential("BILLING_SERVICE_KEYS")
        if any(len(k) < 16 for k in keys):
            raise ConfigError("BILLING_SERVICE_KEYS entries must be at least 16 characters")
        jwt_keys: dict[str, str] = {}
        for pair in credential("BILLING_JWT_KEYS"):
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
        webhook_secrets = _list(env, "STRIPE_WEBHOOK_SECRET")
        if not webhook_secrets and not stripe_key:
            # Sandbox mode only: the sandbox signs its events with this generated secret.
            webhook_secrets = credential("STRIPE_WEBHOOK_SECRET")
        ttl_max = _int(env, "BILLING_TOKEN_TTL_MAX_SEC", 3600, 60, 86400)
        replicas = _int(env, "BILLING_GRPC_REPLICAS", 1, 1, 16)
        settings = cls(
            database_url=database_url,
            service_keys=tuple(keys),
            jwt_keys=jwt_keys,
            jwt_signing_kid=signing_kid,
            jwt_issuer=env.get("BILLING_JWT_ISSUER", "").strip() or "tollbooth",
            jwt_audience=env.get("BILLING_JWT_AUDIENCE", "").strip() or "billing-api",
            jwt_leeway_sec=_int(env, "BILLING_JWT_LEEWAY_SEC", 30, 0, MAX_JWT_LEEWAY_SEC),
            token_ttl_default=min(900, ttl_max),
            token_ttl_max=ttl_max,
            stripe_api_key=stripe_key,
            webhook_secrets=tuple(webhook_secrets),
            webhook_tolerance_sec=_int(env, "STRIPE_WEBHOOK_TOLERANCE_SEC", 300, 1, 3600),
            grpc_host=env.get("BILLING_GRPC_HOST", "").strip() or "127.0.0.1",
            grpc_port=_int(env, "BILLING_GRPC_PORT", 50051, 1, 65535 - replicas + 1),
            grpc_replicas=replicas,
            rest_host=env.get("BILLING_REST_HOST", "").strip() or "127.0.0.1",
            rest_port=_int(env, "BILLING_REST_PORT", 8080, 1, 65535),
            sidecar_port=_int(env, "BILLING_SIDECAR_PORT", 8090, 1, 65535),
            sandbox_port=_int(env, "BILLING_SANDBOX_PORT", 12111, 1, 65535),
            envoy_admin_port=_int(env, "BILLING_ENVOY_ADMIN_PORT", 9901, 1, 65535),
            cors_origins=tuple(
                _list(env, "BILLING_CORS_ORIGINS", "http://localhost:3000,http://127.0.0.1:3000")
            ),
            max_body_bytes=_int(env, "BILLING_MAX_BODY_BYTES", 1_048_576, 1024, 64 * 1024 * 1024),
            grpc_workers=_int(env, "BILLING_GRPC_WORKERS", 32, 1, 512),
            data_dir=data_dir,
            stripe_api_base=env.get("STRIPE_API_BASE", "").strip().rstrip("/"),
            stripe_timeout_sec=float(_int(env, "STRIPE_TIMEOUT_SEC", 10, 1, 120)),
            stripe_max_network_retries=_int(env, "STRIPE_MAX_NETWORK_RETRIES", 2, 0, 10),
            defaults_used=tuple(used),
            generated=generated,
        )
        return settings

    def exposure_error(self) -> str | None:
        """Why these settings must not serve: a generated credential on a non-loopback listener."""
        exposed = [
            f"{name}={host}"
            for name, host in (
                ("BILLING_GRPC_HOST", self.grpc_host),
                ("BILLING_REST_HOST", self.rest_host),
            )
            if not is_loopback(host)
        ]
        if exposed and self.generated:
            missing = ", ".join(sorted(self.generated))
            return (
                f"refusing to listen on {', '.join(exposed)} with credentials generated for local "
                f"use; set {missing}"
            )
        return None

    def warnings(self) -> list[str]:
        """What every process prints at start when it runs on generated credentials."""
        return [
            f"WARNING: {name} is not set: using a key generated for this data directory "
            f"({path}); fine on loopback, set {name} before exposing the service"
            for name, path in sorted(self.generated.items())
        ]

    def describe(self) -> list[tuple[str, str]]:
        """Rows for the start-up banner. Secrets are never shown, only where generated ones live."""

        def mark(name: str, shown: str) -> str:
            if name in self.generated:
                return f"generated, in {self.generated[name]}"
            return f"{shown}  (local default)" if name in self.defaults_used else shown

        return [
            ("BILLING_DATABASE_URL", mark("BILLING_DATABASE_URL", redact_url(self.database_url))),
            (
                "BILLING_SERVICE_KEYS",
                mark("BILLING_SERVICE_KEYS", f"{len(self.service_keys)} key(s) configured"),
            ),
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
            (
                "STRIPE_WEBHOOK_SECRET",
                mark("STRIPE_WEBHOOK_SECRET", f"{len(self.webhook_secrets)} secret(s) configured"),
            ),
            ("BILLING_GRPC_PORT", ", ".join(str(p) for p in self.grpc_ports)),
            ("BILLING_REST_PORT", str(self.rest_port)),
            ("BILLING_SIDECAR_PORT", str(self.sidecar_port)),
            (
                "BILLING_SANDBOX_PORT",
                str(self.sandbox_port) if self.sandbox else "(not started: real Stripe)",
            ),
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
