"""Configuration: no credential from the repository, generated ones per data directory, and
generated ones never exposed beyond loopback."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import grpc
import jwt
import pytest

from tests.devstack import free_port
from tollbooth.config import ConfigError, Settings, local_secret
from tollbooth.db.migrate import upgrade

ZERO_CONFIG = (
    "BILLING_SERVICE_KEYS",
    "BILLING_JWT_KEYS",
    "STRIPE_WEBHOOK_SECRET",
    "BILLING_OPERATOR_KEY",
)


def zero(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"BILLING_DATA_DIR": str(tmp_path), **extra}


def test_zero_config_generates_private_credentials_and_reuses_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = Settings.from_env(zero(tmp_path))
    assert set(first.generated) == set(ZERO_CONFIG)
    for path in first.generated.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.parent == tmp_path / "secrets"
    again = Settings.from_env(zero(tmp_path))
    assert again.service_keys == first.service_keys
    assert again.jwt_keys == first.jwt_keys
    assert again.webhook_secrets == first.webhook_secrets
    assert again.operator_key == first.operator_key
    assert first.operator_key.startswith("op_local_") and len(first.operator_key) > 40
    other = Settings.from_env(zero(tmp_path / "elsewhere"))
    assert other.service_keys != first.service_keys and other.jwt_keys != first.jwt_keys
    assert other.operator_key != first.operator_key


def test_no_credential_in_the_source_tree_is_used(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings.from_env(zero(tmp_path))
    source = "".join(
        p.read_text() for p in Path(__file__).resolve().parents[1].joinpath("server").rglob("*.py")
    )
    values = [
        *settings.service_keys,
        *settings.jwt_keys.values(),
        *settings.webhook_secrets,
        settings.operator_key,
    ]
    assert all(v not in source for v in values)
    assert "dev" not in settings.jwt_keys


def _generate(folder: str) -> str:
    return local_secret(Path(folder), "BILLING_SERVICE_KEYS")[0]


def test_replicas_starting_together_agree_on_one_generated_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with ProcessPoolExecutor(8) as pool:
        values = set(pool.map(_generate, [str(tmp_path)] * 32))
    assert len(values) == 1
    assert [p.name for p in (tmp_path / "secrets").iterdir()] == ["service-key"]


def test_configured_credentials_generate_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings.from_env(
        zero(
            tmp_path,
            BILLING_SERVICE_KEYS="a-configured-backend-key",
            BILLING_JWT_KEYS="k:0123456789abcdef0123456789abcdef",
            STRIPE_WEBHOOK_SECRET="whsec_configured",
            BILLING_OPERATOR_KEY="a-configured-operator-key",
        )
    )
    assert settings.generated == {} and not (tmp_path / "secrets").exists()
    assert settings.warnings() == [] and settings.exposure_error() is None


@pytest.mark.parametrize("variable", ["BILLING_GRPC_HOST", "BILLING_REST_HOST"])
def test_generated_credentials_refuse_a_non_loopback_listener(tmp_path, variable) -> None:  # type: ignore[no-untyped-def]
    settings = Settings.from_env(zero(tmp_path, **{variable: "0.0.0.0"}))
    refusal = settings.exposure_error()
    assert refusal is not None
    assert all(name in refusal for name in ZERO_CONFIG) and variable in refusal
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert Settings.from_env(zero(tmp_path, **{variable: host})).exposure_error() is None


@pytest.mark.parametrize("command", ["serve-grpc", "serve-sidecar", "run"])
def test_every_serving_command_refuses_exposure_naming_the_variable(tmp_path, command) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, **zero(tmp_path, BILLING_GRPC_HOST="0.0.0.0")}
    for name in ZERO_CONFIG:
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-m", "tollbooth.cli", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "BILLING_SERVICE_KEYS" in proc.stderr and "BILLING_JWT_KEYS" in proc.stderr


@pytest.mark.parametrize("command", ["serve-grpc", "serve-sidecar"])
def test_serve_commands_warn_exactly_as_run_does(tmp_path, command) -> None:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        **zero(
            tmp_path,
            BILLING_DATABASE_URL=f"sqlite:///{tmp_path / 'b.db'}",
            BILLING_GRPC_PORT=str(free_port()),
            BILLING_SIDECAR_PORT=str(free_port()),
        ),
    }
    for name in ZERO_CONFIG:
        env.pop(name, None)
    upgrade(env["BILLING_DATABASE_URL"])  # serve-grpc refuses a database never migrated
    expected = Settings.from_env(zero(tmp_path)).warnings()
    assert len(expected) == len(ZERO_CONFIG)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollbooth.cli", command],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        # The warnings are the first log lines, one JSON object each.
        lines = [json.loads(proc.stdout.readline())["message"] for _ in expected]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert lines == expected


def test_zero_config_refuses_a_token_signed_with_the_old_repository_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from billing.v1 import checkout_pb2, checkout_pb2_grpc
    from tests.devstack import serving
    from tests.helpers import error_reason
    from tollbooth.app import Deps
    from tollbooth.db.migrate import upgrade

    settings = Settings.from_env(zero(tmp_path, BILLING_DATABASE_URL=f"sqlite:///{tmp_path}/b.db"))
    upgrade(settings.database_url)
    deps = Deps.build(settings)
    now = int(time.time())
    forged = jwt.encode(
        {
            "iss": settings.jwt_issuer,
            "aud": settings.jwt_audience,
            "sub": "p",
            "acct": "acct_victim",
            "uid": "u",
            "scp": ["checkout", "portal", "billing:read", "credits:read", "usage:read"],
            "iat": now,
            "exp": now + 600,
        },
        "local-only-jwt-signing-key-change-me-0123456789",
        algorithm="HS256",
        headers={"kid": "dev"},
    )
    try:
        with serving(deps) as channel:
            stub = checkout_pb2_grpc.CheckoutServiceStub(channel)
            with pytest.raises(grpc.RpcError) as exc:
                stub.GetBillingStatus(
                    checkout_pb2.GetBillingStatusRequest(),
                    metadata=(("authorization", f"Bearer {forged}"),),
                    timeout=10,
                )
            assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error_reason(exc.value) == "TOKEN_INVALID"
            with pytest.raises(grpc.RpcError) as exc:
                stub.GetBillingStatus(
                    checkout_pb2.GetBillingStatusRequest(account="acct_victim"),
                    metadata=(("x-api-key", "dev-service-key"),),
                    timeout=10,
                )
            assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        deps.db.dispose()


@pytest.mark.parametrize(
    "variable,value",
    [
        ("BILLING_JWT_LEEWAY_SEC", "301"),
        ("BILLING_JWT_LEEWAY_SEC", "-1"),
        ("BILLING_GRPC_REPLICAS", "0"),
        # At most 20 (the edge bounds any request's nesting): 21 was lowered to 20 silently.
        ("BILLING_USAGE_MAX_PROPERTIES_DEPTH", "21"),
        ("BILLING_USAGE_MAX_PROPERTIES_DEPTH", "0"),
        ("BILLING_SERVICE_KEYS", "short"),
        ("BILLING_JWT_KEYS", "k:tooshort"),
        ("BILLING_GRPC_PORT", "http"),
        # Where the Stripe client sends requests: an http(s) URL, or the first provider call
        # failed far from the variable (ftp://, a bare host:port, no host, a bad port).
        ("STRIPE_API_BASE", "ftp://stripe.example"),
        ("STRIPE_API_BASE", "localhost:12111"),
        ("STRIPE_API_BASE", "127.0.0.1:12111"),
        ("STRIPE_API_BASE", "http://"),
        ("STRIPE_API_BASE", "https://:443"),
        ("STRIPE_API_BASE", "http://127.0.0.1:99999"),
        ("STRIPE_API_BASE", "http://127.0.0.1:0"),
        ("STRIPE_API_BASE", "http://user:pw@127.0.0.1:12111"),
        ("STRIPE_API_BASE", "http://127.0.0.1:12111/?x=1"),
        ("STRIPE_API_BASE", "http://127.0.0.1:12111/#top"),
        ("STRIPE_API_BASE", "http://127.0.0.1 :12111"),
        ("STRIPE_API_BASE", "javascript:alert(1)"),
    ],
)
def test_unusable_values_are_refused(tmp_path, variable, value) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(zero(tmp_path, **{variable: value}))
    assert variable in str(exc.value)


@pytest.mark.parametrize("value", ["short", "a-long-enough-key-1,a-long-enough-key-2"])
def test_operator_key_is_one_key_of_16_characters(tmp_path, value) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="BILLING_OPERATOR_KEY"):
        Settings.from_env(zero(tmp_path, BILLING_OPERATOR_KEY=value))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BILLING_GRPC_PORT", "abc"),
        ("BILLING_LOG_LEVEL", "loud"),
        ("STRIPE_TIMEOUT_SEC", "soon"),
        ("BILLING_DATABASE_URL", "not a url"),
        ("BILLING_DATABASE_URL", "mysql://u@h/db"),
        ("BILLING_SANDBOX_FAULTS", "zzz"),
        ("BILLING_SANDBOX_FAULTS", "seed=\u0661\u0662"),
        ("BILLING_RUN_DIR", "/proc/no-such-dir/run"),
        ("BILLING_DATA_DIR", "/proc/no-such-dir"),
        ("STRIPE_API_BASE", "localhost:12111"),
        ("STRIPE_API_KEY", "pk_test_51Habcdef"),
    ],
)
def test_a_bad_setting_stops_run_with_one_plain_line_naming_it(tmp_path, variable, value) -> None:  # type: ignore[no-untyped-def]
    """Before logging is set up: no JSON record, no traceback, nothing started or written."""
    env = {**os.environ, **zero(tmp_path), variable: value}
    for name in ("STRIPE_API_KEY", "BILLING_DATABASE_URL", "BILLING_RUN_DIR"):
        if name != variable:
            env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-m", "tollbooth.cli", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("configuration error: ") and variable in lines[0]
    assert not (tmp_path / "billing.db").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("https://api.stripe.com", "https://api.stripe.com"),
        ("http://127.0.0.1:12111/", "http://127.0.0.1:12111"),
        ("  http://[::1]:12111  ", "http://[::1]:12111"),
        ("https://proxy.internal/stripe/", "https://proxy.internal/stripe"),
    ],
)
def test_an_http_api_base_is_kept_without_its_trailing_slash(tmp_path, value, kept) -> None:  # type: ignore[no-untyped-def]
    assert Settings.from_env(zero(tmp_path, STRIPE_API_BASE=value)).stripe_api_base == kept


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("pk_test_51Habcdef", "publishable"),
        ("pk_live_51Habcdef", "publishable"),
        ("whsec_0123456789abcdef", "STRIPE_WEBHOOK_SECRET"),
        ("sk_tset_51Habcdef", ""),
        ("sk_test_", ""),
        ("sk_test_51H abcdef", ""),
        ("Bearer sk_test_51Habcdef", ""),
        ("my-stripe-key", ""),
    ],
)
def test_a_stripe_key_of_the_wrong_shape_stops_the_process_without_showing_it(  # type: ignore[no-untyped-def]
    tmp_path, value, hint
) -> None:
    # Before, any value switched to real Stripe and failed only at the first provider call
    # (an authentication error in the middle of a checkout).
    env = zero(tmp_path, STRIPE_API_KEY=value, STRIPE_WEBHOOK_SECRET="whsec_test")
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(env)
    message = str(exc.value)
    assert message.startswith("STRIPE_API_KEY must be a Stripe secret or restricted key")
    assert hint in message
    assert value not in message.replace("sk_test_...", "")  # the key is never shown


@pytest.mark.parametrize(
    "value", ["sk_test_51Habc", "sk_live_51Habc", "rk_test_51Habc", "rk_live_51Habc", "sk_test_a_b"]
)
def test_a_stripe_secret_or_restricted_key_is_kept(tmp_path, value) -> None:  # type: ignore[no-untyped-def]
    env = zero(tmp_path, STRIPE_API_KEY=f" {value} ", STRIPE_WEBHOOK_SECRET="whsec_test")
    assert Settings.from_env(env).stripe_api_key == value


def test_a_decimal_timeout_is_a_timeout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert Settings.from_env(zero(tmp_path, STRIPE_TIMEOUT_SEC="2.5")).stripe_timeout_sec == 2.5
    assert Settings.from_env(zero(tmp_path, BILLING_LOG_LEVEL="debug")).log_level == "DEBUG"


def test_an_unreachable_database_stops_run_naming_the_variable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Found when `run` migrates (after logging is set up): one JSON error line, no traceback,
    the password never shown."""
    env = {
        **os.environ,
        **zero(
            tmp_path,
            BILLING_DATABASE_URL=f"postgresql://nobody:hunter2@127.0.0.1:{free_port()}/x",
            BILLING_REST_PORT=str(free_port()),
            BILLING_GRPC_PORT=str(free_port()),
            BILLING_SIDECAR_PORT=str(free_port()),
            BILLING_SANDBOX_PORT=str(free_port()),
            BILLING_ENVOY_ADMIN_PORT=str(free_port()),
            BILLING_METRICS_PORT="0",
        ),
    }
    env.pop("STRIPE_API_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tollbooth.cli", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    records = [json.loads(line) for line in proc.stdout.splitlines() + proc.stderr.splitlines()]
    errors = [r for r in records if r["level"] in ("ERROR", "CRITICAL")]
    assert [r.get("event") for r in errors] == ["database_unreachable"]
    assert "BILLING_DATABASE_URL" in errors[0]["message"] and "exc_info" not in errors[0]
    assert "hunter2" not in proc.stdout + proc.stderr


def test_cors_origins_are_origins_as_a_browser_sends_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A browser's Origin header is `scheme://host[:port]`, lower-case, no slash: Envoy matches
    BILLING_CORS_ORIGINS exactly, so `http://localhost:3000/` or an upper-case host would
    refuse every preflight of that app. They are cleaned as the redirect origins are, and
    what is not an origin stops the start naming the variable."""
    import yaml

    from tollbooth.gateway import render

    env = zero(tmp_path, BILLING_CORS_ORIGINS="http://localhost:3000/, HTTPS://App.Example:8443")
    settings = Settings.from_env(env)
    assert settings.cors_origins == ("http://localhost:3000", "https://app.example:8443")
    rendered = yaml.safe_load(render(settings, tmp_path / "envoy").read_text())
    exact = {m["exact"] for group in _find(rendered, "allow_origin_string_match") for m in group}
    assert exact == {"http://localhost:3000", "https://app.example:8443"}
    for bad in ("localhost:3000", "*", "http://app.example/path", "ftp://app.example"):
        with pytest.raises(ConfigError, match="BILLING_CORS_ORIGINS"):
            Settings.from_env(zero(tmp_path, BILLING_CORS_ORIGINS=bad))


def _find(node: object, key: str) -> list:  # type: ignore[type-arg]
    if isinstance(node, dict):
        found = [node[key]] if key in node else []
        return found + [x for v in node.values() for x in _find(v, key)]
    if isinstance(node, list):
        return [x for v in node for x in _find(v, key)]
    return []
