"""Configuration: every setting of every process, read once from the environment.

`Settings.from_env()` (pydantic-settings) is the one reader of the environment; a process
reads it once at start and passes the object down (servicers get it through their deps).
Related settings form sections that can also be read alone: `SandboxSettings` (the Stripe
sandbox run on its own) and `UsageSettings` (usage limits); `Settings` holds them all.

No credential ever comes from the repository. When a service key, the JWT signing key or (in
sandbox mode) the webhook secret is not configured, a random one is generated once per data
directory (`$BILLING_DATA_DIR/secrets/`, files of mode 0600) and reused on restart, so
`make run` works with zero configuration and every replica on the machine shares them. Such
generated credentials are for loopback only: a listener on any other address refuses to start
and names the variable to set.

Values are read as pydantic-settings reads them, then cleaned the way the service always has
(`tollbooth.configreading`): surrounding blanks are dropped, an empty value means the default,
lists are comma-separated, and integers are range-checked with an error that names the variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from tollbooth.configreading import _Environment, env
from tollbooth.configvalues import (  # noqa: F401  (re-exported: config's public names)
    DATABASE_SCHEMES,
    GENERATED,
    LOG_LEVELS,
    ConfigError,
    _database_url,
    _integer,
    _is_ip,
    _seconds,
    api_base,
    derive_live,
    dial_url,
    is_loopback,
    local_secret,
    redact_url,
    redirect_origins,
    split_list,
    stripe_key,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

MAX_JWT_LEEWAY_SEC = 300
MAX_GRPC_REPLICAS = 16
DEFAULT_SANDBOX_PORT = 12111
DEFAULT_CORS_ORIGINS = ("http://localhost:3000", "http://127.0.0.1:3000")


class UsageSettings(_Environment):
    """Usage limits (positive integers); `tollbooth.usage.limits.Limits` says what each means."""

    usage_max_batch: int = env("BILLING_USAGE_MAX_BATCH", 1000, lo=1)
    usage_max_future_sec: int = env("BILLING_USAGE_MAX_FUTURE_SEC", 300, lo=1)
    usage_max_age_days: int = env("BILLING_USAGE_MAX_AGE_DAYS", 1826, lo=1)
    usage_max_properties_bytes: int = env("BILLING_USAGE_MAX_PROPERTIES_BYTES", 8192, lo=1)
    # At most 20: edge validation bounds the nesting of any request at 64 message levels and
    # one JSON level is two (Struct, Value), so a deeper limit could never be reached.
    usage_max_properties_depth: int = env("BILLING_USAGE_MAX_PROPERTIES_DEPTH", 5, lo=1, hi=20)
    usage_stream_group_max: int = env("BILLING_USAGE_STREAM_GROUP_MAX", 500, lo=1)
    # At most a second: the acks of a stream's events wait this long (a huge value overflowed
    # the wait, failing every StreamEvents).
    usage_stream_group_ms: int = env("BILLING_USAGE_STREAM_GROUP_MS", 5, lo=1, hi=1000)


class SandboxSettings(_Environment):
    """The Stripe sandbox's variables; `tollbooth.sandbox.config` documents them.

    Unset optional values stay None: the sandbox of the stack and the sandbox run alone
    (`tollbooth sandbox`) fill them with different defaults. Faults are parsed by the sandbox.
    """

    # Comma-separated during a rotation; the first one signs.
    webhook_secrets: tuple[str, ...] = env("STRIPE_WEBHOOK_SECRET", ())
    sandbox_port: int = env("BILLING_SANDBOX_PORT", DEFAULT_SANDBOX_PORT, lo=1, hi=65535)
    sandbox_host: str = env("BILLING_SANDBOX_HOST", "127.0.0.1")
    sandbox_db: str | None = env("BILLING_SANDBOX_DB", None)
    # Set but empty: keep events but deliver nothing.
    sandbox_webhook_url: str | None = env("BILLING_SANDBOX_WEBHOOK_URL", None, raw=True)
    sandbox_faults: str = env("BILLING_SANDBOX_FAULTS", "")
    sandbox_public_url: str | None = env("BILLING_SANDBOX_PUBLIC_URL", None)
    sandbox_retry_base_ms: int | None = env(
        "BILLING_SANDBOX_RETRY_BASE_MS", None, lo=0, hi=86_400_000
    )
    # Envoy's listener: the webhook path on it is where the sandbox delivers events, whether
    # `run` starts the sandbox or it runs alone (the same variables, the same URL).
    rest_host: str = env("BILLING_REST_HOST", "127.0.0.1")
    rest_port: int = env("BILLING_REST_PORT", 8080, lo=1, hi=65535)

    @property
    def webhook_url(self) -> str:
        """Where Stripe (or the sandbox) delivers events: the webhook path on Envoy."""
        host = "127.0.0.1" if not is_loopback(self.rest_host) else self.rest_host
        return f"http://{host}:{self.rest_port}/v1/billing/webhooks"


class NotifySettings(_Environment):
    """Outbound notification delivery (`tollbooth.notifications.delivery` says what each does).

    Integers only (as every numeric setting here): short durations are in milliseconds."""

    # Each read or write of a POST waits at most the timeout; the whole POST ends by the
    # deadline (a failed attempt, retried), however slowly the receiver trickles its answer.
    notify_timeout_sec: int = env("BILLING_NOTIFY_TIMEOUT_SEC", 5, lo=1, hi=60)
    notify_deadline_sec: int = env("BILLING_NOTIFY_DEADLINE_SEC", 10, lo=1, hi=120)
    # The first retry after this long, doubling (with jitter) up to the cap.
    notify_retry_first_ms: int = env("BILLING_NOTIFY_RETRY_FIRST_MS", 1000, lo=1, hi=3_600_000)
    notify_retry_max_sec: int = env("BILLING_NOTIFY_RETRY_MAX_SEC", 3600, lo=1, hi=86400)
    # A message is given up this long after it was written; an endpoint failing this long
    # is disabled.
    notify_give_up_sec: int = env("BILLING_NOTIFY_GIVE_UP_SEC", 3 * 86400, lo=1, hi=30 * 86400)
    notify_disable_after_sec: int = env(
        "BILLING_NOTIFY_DISABLE_AFTER_SEC", 3 * 86400, lo=1, hi=30 * 86400
    )
    notify_poll_ms: int = env("BILLING_NOTIFY_POLL_MS", 500, lo=10, hi=60_000)
    notify_batch: int = env("BILLING_NOTIFY_BATCH", 50, lo=1, hi=1000)
    notify_senders: int = env("BILLING_NOTIFY_SENDERS", 8, lo=1, hi=64)
    # Opt-in SSRF guard (`notifications/addresses.py`); off: local receivers work.
    notify_deny_private: bool = env("BILLING_NOTIFY_DENY_PRIVATE", False)
    # WatchNotifications ends a stream that had nothing to send for this long.
    notify_watch_idle_sec: int = env("BILLING_NOTIFY_WATCH_IDLE_SEC", 300, lo=1, hi=86400)


class LimitSettings(_Environment):
    """Limits that hold under abuse: rate limits per caller and class (`rpc/ratelimit.py`),
    open streams per replica and per caller (`rpc/streams.py`), and how long Envoy and the
    sidecar wait for a slow client. Rates read like '20/minute' or '1000 per hour'; 'off'
    turns a class off."""

    # Empty: the counters live in the service's database (shared by every replica); or any
    # `limits` storage URI, e.g. redis://127.0.0.1:6379 (needs the redis package).
    rate_limit_storage: str = env("BILLING_RATE_LIMIT_STORAGE", "")
    rate_limit_session_creates: str = env("BILLING_RATE_LIMIT_SESSION_CREATES", "20/minute")
    rate_limit_customer_creates: str = env("BILLING_RATE_LIMIT_CUSTOMER_CREATES", "1000/hour")
    rate_limit_customer_queries: str = env("BILLING_RATE_LIMIT_CUSTOMER_QUERIES", "5000/hour")
    rate_limit_key: str = env("BILLING_RATE_LIMIT_KEY", "60000/minute")
    rate_limit_account: str = env("BILLING_RATE_LIMIT_ACCOUNT", "1200/minute")
    # Failed operator console sign-ins, per client address and for all addresses together.
    rate_limit_console_signin: str = env("BILLING_RATE_LIMIT_CONSOLE_SIGNIN", "10/minute")
    rate_limit_console_signin_all: str = env("BILLING_RATE_LIMIT_CONSOLE_SIGNIN_ALL", "100/minute")
    grpc_max_streams: int = env("BILLING_GRPC_MAX_STREAMS", 16, lo=1, hi=512)
    grpc_max_streams_per_key: int = env("BILLING_GRPC_MAX_STREAMS_PER_KEY", 8, lo=1, hi=512)
    grpc_stream_idle_sec: int = env("BILLING_GRPC_STREAM_IDLE_SEC", 60, lo=1, hi=86400)
    http_headers_timeout_sec: int = env("BILLING_HTTP_HEADERS_TIMEOUT_SEC", 10, lo=1, hi=300)
    http_request_timeout_sec: int = env("BILLING_HTTP_REQUEST_TIMEOUT_SEC", 30, lo=1, hi=3600)
    http_idle_timeout_sec: int = env("BILLING_HTTP_IDLE_TIMEOUT_SEC", 60, lo=1, hi=3600)

    RATE_VARIABLES: ClassVar[dict[str, str]] = {
        "session_creates": "BILLING_RATE_LIMIT_SESSION_CREATES",
        "customer_creates": "BILLING_RATE_LIMIT_CUSTOMER_CREATES",
        "customer_queries": "BILLING_RATE_LIMIT_CUSTOMER_QUERIES",
        "key": "BILLING_RATE_LIMIT_KEY",
        "account": "BILLING_RATE_LIMIT_ACCOUNT",
        "console_signin": "BILLING_RATE_LIMIT_CONSOLE_SIGNIN",
        "console_signin_all": "BILLING_RATE_LIMIT_CONSOLE_SIGNIN_ALL",
    }

    @model_validator(mode="after")
    def _rates_parse(self) -> LimitSettings:
        from limits import parse

        for name, variable in self.RATE_VARIABLES.items():
            text = getattr(self, f"rate_limit_{name}")
            if text.lower() == "off":
                continue
            try:
                parse(text)
            except ValueError:
                raise ConfigError(
                    f"{variable} must be a rate like '20/minute' or 'off', got {text[:40]!r}"
                ) from None
        return self


class Settings(NotifySettings, SandboxSettings, UsageSettings, LimitSettings):
    """Every setting of the service. Attribute names are what callers use; each field says
    which variable it comes from."""

    data_dir: Path = env("BILLING_DATA_DIR", REPO_ROOT / "var")
    database_url: str = env("BILLING_DATABASE_URL", "")
    service_keys: tuple[str, ...] = env("BILLING_SERVICE_KEYS", ())
    # The operator console's sign-in key (typed into /console/signin; never a browser token).
    operator_key: str = env("BILLING_OPERATOR_KEY", "")
    # The console's session cookie carries `Secure` (set it behind TLS; off for plain-HTTP
    # `make run`, where a browser would not send a Secure cookie back).
    console_cookie_secure: bool = env("BILLING_CONSOLE_COOKIE_SECURE", False)
    jwt_keys: dict[str, str] = env("BILLING_JWT_KEYS", {})
    jwt_signing_kid: str = env("BILLING_JWT_SIGNING_KID", "")
    jwt_issuer: str = env("BILLING_JWT_ISSUER", "tollbooth")
    jwt_audience: str = env("BILLING_JWT_AUDIENCE", "billing-api")
    jwt_leeway_sec: int = env("BILLING_JWT_LEEWAY_SEC", 30, lo=0, hi=MAX_JWT_LEEWAY_SEC)
    token_ttl_max: int = env("BILLING_TOKEN_TTL_MAX_SEC", 3600, lo=60, hi=86400)
    stripe_api_key: str = env("STRIPE_API_KEY", "")
    webhook_tolerance_sec: int = env("STRIPE_WEBHOOK_TOLERANCE_SEC", 300, lo=1, hi=3600)
    # The inbox worker retries a failed event after this long, doubling up to an hour.
    inbox_retry_first_ms: int = env("BILLING_INBOX_RETRY_FIRST_MS", 10_000, lo=1, hi=3_600_000)
    grpc_host: str = env("BILLING_GRPC_HOST", "127.0.0.1")
    grpc_replicas: int = env("BILLING_GRPC_REPLICAS", 1, lo=1, hi=MAX_GRPC_REPLICAS)
    grpc_port: int = env("BILLING_GRPC_PORT", 50051, lo=1, hi=65535)
    sidecar_port: int = env("BILLING_SIDECAR_PORT", 8090, lo=1, hi=65535)
    envoy_admin_port: int = env("BILLING_ENVOY_ADMIN_PORT", 9901, lo=1, hi=65535)
    # Prometheus metrics on loopback: the gRPC replicas from this port upwards, then the
    # sidecar and the sandbox (`run` hands each child its own); 0 turns them off.
    metrics_port: int = env("BILLING_METRICS_PORT", 9464, lo=0, hi=65535)
    # OpenTelemetry: traces of gRPC calls go to this OTLP/gRPC collector; unset, no tracing.
    otel_endpoint: str = env("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    cors_origins: tuple[str, ...] = env("BILLING_CORS_ORIGINS", DEFAULT_CORS_ORIGINS)
    # Where checkout and portal may send the buyer back (success, cancel and return URLs):
    # origins `scheme://host[:port]`; unset, the CORS origins.
    redirect_origins: tuple[str, ...] = env("BILLING_REDIRECT_ORIGINS", DEFAULT_CORS_ORIGINS)
    # The lookup_key of the price a checkout naming no items sells (seed 001's body); unset,
    # such a checkout is FIELD_REQUIRED `items`.
    checkout_default_lookup_key: str = env("BILLING_CHECKOUT_DEFAULT_LOOKUP_KEY", "")
    max_body_bytes: int = env("BILLING_MAX_BODY_BYTES", 1_048_576, lo=1024, hi=64 * 1024 * 1024)
    grpc_workers: int = env("BILLING_GRPC_WORKERS", 32, lo=1, hi=512)
    # Server processes per replica, sharing its port (SO_REUSEPORT); 0 means one per core.
    grpc_processes: int = env("BILLING_GRPC_PROCESSES", 0, lo=0, hi=64)
    # CheckEntitlement: how long (ms) a server replica may answer a repeated question from its
    # last answer (whose `as_of` it keeps); 0 reads the database on every call.
    entitlement_cache_ms: int = env("BILLING_ENTITLEMENT_CACHE_MS", 0, lo=0, hi=60_000)
    # The provider: STRIPE_API_BASE overrides where the Stripe client sends requests (empty:
    # Stripe itself with a key, the local sandbox without one); timeout and network retries.
    stripe_api_base: str = env("STRIPE_API_BASE", "")
    stripe_timeout_sec: float = env("STRIPE_TIMEOUT_SEC", 10.0, lo=1, hi=120)
    stripe_max_network_retries: int = env("STRIPE_MAX_NETWORK_RETRIES", 2, lo=0, hi=10)
    # The most an RPC's provider calls may take in all (less when the caller's deadline is
    # nearer, `tollbooth.deadline`): below Envoy's 30 s route timeout, so a REST caller gets
    # the server's answer, not Envoy's.
    stripe_rpc_budget_sec: float = env("STRIPE_RPC_BUDGET_SEC", 25.0, lo=1, hi=120)
    # The live environment, off unless configured (`tollbooth.environments` says what each
    # is and what is refused): the settings above are the test environment's.
    live_database_url: str = env("BILLING_LIVE_DATABASE_URL", "")
    live_stripe_api_key: str = env("BILLING_LIVE_STRIPE_API_KEY", "")
    live_webhook_secrets: tuple[str, ...] = env("BILLING_LIVE_STRIPE_WEBHOOK_SECRET", ())
    live_service_keys: tuple[str, ...] = env("BILLING_LIVE_SERVICE_KEYS", ())
    live_jwt_keys: dict[str, str] = env("BILLING_LIVE_JWT_KEYS", {})
    live_jwt_signing_kid: str = env("BILLING_LIVE_JWT_SIGNING_KID", "")
    live_stripe_api_base: str = env("BILLING_LIVE_STRIPE_API_BASE", "")
    # The processes: log level, where `run` keeps Envoy's files, and whether this process is
    # a child of `run` (which then prints the start-up warnings once, itself).
    log_level: str = env("BILLING_LOG_LEVEL", "INFO")
    run_dir: Path | None = env("BILLING_RUN_DIR", None)
    supervised: bool = env("TOLLBOOTH_SUPERVISED", False)
    # Not variables: which variables fell back to a local default, and the file of each
    # credential generated for this data directory.
    defaults_used: tuple[str, ...] = Field(default=())
    generated: dict[str, Path] = Field(default_factory=dict)

    SUPERVISED_VARIABLE: ClassVar[str] = "TOLLBOOTH_SUPERVISED"

    @classmethod
    def _derive(cls, values: dict[str, Any]) -> dict[str, Any]:
        values["defaults_used"] = ()
        values["generated"] = {}
        data_dir = Path(values.get("BILLING_DATA_DIR") or REPO_ROOT / "var")
        values["BILLING_DATA_DIR"] = data_dir
        generated: dict[str, Path] = {}

        def credential(name: str) -> tuple[str, ...]:
            configured = values.get(name) or ()
            if isinstance(configured, str):
                configured = split_list(configured)
            if configured:
                return tuple(configured)
            try:
                value, path = local_secret(data_dir, name)
            except OSError as exc:
                raise ConfigError(
                    f"BILLING_DATA_DIR {str(data_dir)!r} cannot hold the generated {name} "
                    f"({exc.strerror or exc})"
                ) from None
            generated[name] = path
            return (value,)

        if not values.get("BILLING_DATABASE_URL"):
            values["BILLING_DATABASE_URL"] = f"sqlite:///{data_dir / 'billing.db'}"
            values["defaults_used"] = ("BILLING_DATABASE_URL",)
        _database_url(values["BILLING_DATABASE_URL"])
        level = str(values.get("BILLING_LOG_LEVEL", "INFO")).upper()
        if level not in LOG_LEVELS:
            raise ConfigError(f"BILLING_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        values["BILLING_LOG_LEVEL"] = level
        keys = credential("BILLING_SERVICE_KEYS")
        if any(len(k) < 16 for k in keys):
            raise ConfigError("BILLING_SERVICE_KEYS entries must be at least 16 characters")
        values["BILLING_SERVICE_KEYS"] = keys
        operator_key = credential("BILLING_OPERATOR_KEY")[0]
        if len(operator_key) < 16 or "," in str(values.get("BILLING_OPERATOR_KEY") or ""):
            raise ConfigError("BILLING_OPERATOR_KEY must be one key of at least 16 characters")
        values["BILLING_OPERATOR_KEY"] = operator_key
        jwt_keys: dict[str, str] = {}
        for pair in credential("BILLING_JWT_KEYS"):
            kid, sep, secret = pair.partition(":")
            if not sep or not kid or len(secret) < 32:
                raise ConfigError(
                    "BILLING_JWT_KEYS entries are KID:SECRET, the secret at least 32 characters"
                )
            jwt_keys[kid] = secret
        values["BILLING_JWT_KEYS"] = jwt_keys
        signing_kid = values.get("BILLING_JWT_SIGNING_KID") or next(iter(jwt_keys))
        if signing_kid not in jwt_keys:
            raise ConfigError(f"BILLING_JWT_SIGNING_KID {signing_kid!r} is not in BILLING_JWT_KEYS")
        values["BILLING_JWT_SIGNING_KID"] = signing_kid
        if not values.get("STRIPE_WEBHOOK_SECRET") and not values.get("STRIPE_API_KEY"):
            # Sandbox mode only: the sandbox signs its events with this generated secret.
            values["STRIPE_WEBHOOK_SECRET"] = credential("STRIPE_WEBHOOK_SECRET")
        replicas = values.get("BILLING_GRPC_REPLICAS", 1)
        port = values.get("BILLING_GRPC_PORT", 50051)
        if port > 65535 - replicas + 1:
            raise ConfigError(f"BILLING_GRPC_PORT must be between 1 and {65535 - replicas + 1}")
        if values.get("STRIPE_API_KEY"):
            values["STRIPE_API_KEY"] = stripe_key("STRIPE_API_KEY", values["STRIPE_API_KEY"])
        if "STRIPE_API_BASE" in values:
            values["STRIPE_API_BASE"] = api_base("STRIPE_API_BASE", values["STRIPE_API_BASE"])
        if "BILLING_CORS_ORIGINS" in values:
            # Envoy matches a browser's Origin exactly: `http://localhost:3000/` never would.
            values["BILLING_CORS_ORIGINS"] = redirect_origins(
                values["BILLING_CORS_ORIGINS"], "BILLING_CORS_ORIGINS"
            )
        if "BILLING_REDIRECT_ORIGINS" in values:
            redirects = redirect_origins(values["BILLING_REDIRECT_ORIGINS"])
        else:
            redirects = redirect_origins(values.get("BILLING_CORS_ORIGINS", DEFAULT_CORS_ORIGINS))
            if not values.get("STRIPE_API_KEY"):
                # Sandbox mode: its "back in your app" page (/sandbox/back) answers redirects.
                sandbox_port = values.get("BILLING_SANDBOX_PORT", DEFAULT_SANDBOX_PORT)
                redirects += tuple(
                    f"http://{host}:{sandbox_port}" for host in ("localhost", "127.0.0.1")
                )
        values["BILLING_REDIRECT_ORIGINS"] = redirects
        if "STRIPE_TIMEOUT_SEC" in values:
            values["STRIPE_TIMEOUT_SEC"] = float(values["STRIPE_TIMEOUT_SEC"])
        if "TOLLBOOTH_SUPERVISED" in values:
            values["TOLLBOOTH_SUPERVISED"] = values["TOLLBOOTH_SUPERVISED"] == "1"
        values["generated"] = generated
        derive_live(values)  # the live environment's (tollbooth.environments)
        return values

    @property
    def token_ttl_default(self) -> int:
        return min(900, self.token_ttl_max)

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
    def grpc_process_count(self) -> int:
        """Server processes per replica: BILLING_GRPC_PROCESSES, or one per core."""
        return self.grpc_processes or max(1, os.cpu_count() or 1)

    @property
    def db_pool_size(self) -> int:
        """Connections a server process keeps open: one per worker thread plus the few
        background threads (inbox worker, metrics), so none opens or closes under load."""
        return self.grpc_workers + 4

    @property
    def grpc_ports(self) -> list[int]:
        """One port per replica, from BILLING_GRPC_PORT upwards."""
        return [self.grpc_port + i for i in range(self.grpc_replicas)]

    @property
    def live_configured(self) -> bool:
        """Whether the live environment is served beside this one (`tollbooth.environments`)."""
        return bool(self.live_database_url)

    @property
    def sandbox(self) -> bool:
        return not self.stripe_api_key

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
                "BILLING_OPERATOR_KEY",
                mark("BILLING_OPERATOR_KEY", "set (console sign-in at /console/)"),
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
            (
                "BILLING_LIVE_DATABASE_URL",
                redact_url(self.live_database_url)
                if self.live_configured
                else "unset (live environment off)",
            ),
            ("BILLING_GRPC_PORT", ", ".join(str(p) for p in self.grpc_ports)),
            ("BILLING_GRPC_PROCESSES", f"{self.grpc_process_count} per replica"),
            ("BILLING_REST_PORT", str(self.rest_port)),
            ("BILLING_SIDECAR_PORT", str(self.sidecar_port)),
            (
                "BILLING_SANDBOX_PORT",
                str(self.sandbox_port) if self.sandbox else "(not started: real Stripe)",
            ),
            ("BILLING_ENVOY_ADMIN_PORT", str(self.envoy_admin_port)),
            ("BILLING_METRICS_PORT", str(self.metrics_port) if self.metrics_port else "off"),
        ]
