"""The token battery: one case each, through gRPC and through Envoy.

Bad tokens answer 401; a good token without the RPC's scope, or on a service-only RPC,
answers 403; before any handler runs, built or not.
"""

from __future__ import annotations

import base64
import http.client
import json
import time

import grpc
import jwt
import pytest

from billing.v1 import checkout_pb2, checkout_pb2_grpc, token_pb2, token_pb2_grpc
from tests.conftest import SERVICE_KEY
from tests.helpers import error_reason

# The wrong-algorithm case signs HS512 with the real (short for HS512) key on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

K2 = "test-signing-key-two-0123456789abcdef"  # the signing key of tests.conftest.make_env
K1 = "test-signing-key-one-0123456789abcdef"  # an older key, still accepted


def b64(data: dict) -> str:  # type: ignore[type-arg]
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(stack, **override):  # type: ignore[no-untyped-def]
    now = int(time.time())
    base = {
        "iss": stack.settings.jwt_issuer,
        "aud": stack.settings.jwt_audience,
        "sub": "p-battery",
        "acct": ACCOUNT["id"],
        "uid": "u",
        "scp": ["checkout", "portal", "billing:read"],
        "iat": now,
        "exp": now + 600,
    }
    base.update(override)
    return {k: v for k, v in base.items() if v is not None}


ACCOUNT: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def account(stack):  # type: ignore[no-untyped-def]
    resp = stack.request(
        "POST", "/mgt/v1/token/issue", {"principal_id": "p-battery"}, {"x-api-key": SERVICE_KEY}
    )
    ACCOUNT["id"] = resp.json()["billing_account_id"]
    ACCOUNT["token"] = resp.json()["access_token"]
    return ACCOUNT


def sign(payload: dict, key: str = K2, kid: str = "k2", alg: str = "HS256") -> str:  # type: ignore[type-arg]
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def tampered(stack) -> str:  # type: ignore[no-untyped-def]
    header, _, signature = sign(claims(stack)).split(".")
    return ".".join([header, b64(claims(stack, acct="acct_someoneelse")), signature])


def alg_none(stack) -> str:  # type: ignore[no-untyped-def]
    return f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': 'k2'})}.{b64(claims(stack))}."


BAD_TOKENS = {
    "tampered": (tampered, "TOKEN_INVALID"),
    "alg_none": (alg_none, "TOKEN_INVALID"),
    "wrong_algorithm": (lambda s: sign(claims(s), alg="HS512"), "TOKEN_INVALID"),
    "wrong_key": (lambda s: sign(claims(s), key="x" * 40), "TOKEN_INVALID"),
    "unknown_kid": (lambda s: sign(claims(s), kid="k9"), "TOKEN_INVALID"),
    "wrong_audience": (lambda s: sign(claims(s, aud="someone-else")), "TOKEN_INVALID"),
    "wrong_issuer": (lambda s: sign(claims(s, iss="evil")), "TOKEN_INVALID"),
    "expired": (
        lambda s: sign(claims(s, iat=int(time.time()) - 900, exp=int(time.time()) - 60)),
        "TOKEN_EXPIRED",
    ),
    "missing_exp": (lambda s: sign(claims(s, exp=None)), "TOKEN_INVALID"),
    "missing_iat": (lambda s: sign(claims(s, iat=None)), "TOKEN_INVALID"),
    "missing_account": (lambda s: sign(claims(s, acct=None)), "TOKEN_INVALID"),
    "missing_scopes": (lambda s: sign(claims(s, scp=None)), "TOKEN_INVALID"),
    "garbage": (lambda s: "not.a.jwt", "TOKEN_INVALID"),
    # A correctly signed token with an absurd expiry once crashed the server (500).
    "absurd_exp": (lambda s: sign(claims(s, exp=10**30)), "TOKEN_INVALID"),
    "fractional_exp": (lambda s: sign(claims(s, exp=int(time.time()) + 600.5)), "TOKEN_INVALID"),
    "lifetime_beyond_the_cap": (
        lambda s: sign(claims(s, exp=int(time.time()) + 30 * 86400)),
        "TOKEN_INVALID",
    ),
    "issued_beyond_the_leeway": (
        lambda s: sign(claims(s, iat=int(time.time()) + 300, exp=int(time.time()) + 900)),
        "TOKEN_INVALID",
    ),
    # The key that used to sit in config.py signs nothing any more.
    "old_repository_key": (
        lambda s: sign(claims(s), key="local-only-jwt-signing-key-change-me-0123456789", kid="dev"),
        "TOKEN_INVALID",
    ),
}


def grpc_billing_status(stack, token: str):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as ch:
        stub = checkout_pb2_grpc.CheckoutServiceStub(ch)
        return stub.GetBillingStatus(
            checkout_pb2.GetBillingStatusRequest(),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_token_is_401_through_envoy(stack, case):  # type: ignore[no-untyped-def]
    make, reason = BAD_TOKENS[case]
    resp = stack.request(
        "GET", "/api/v1/billing", headers={"authorization": f"Bearer {make(stack)}"}
    )
    assert resp.status == 401
    assert resp.reason == reason


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_token_is_unauthenticated_over_grpc(stack, case):  # type: ignore[no-untyped-def]
    make, reason = BAD_TOKENS[case]
    with pytest.raises(grpc.RpcError) as exc:
        grpc_billing_status(stack, make(stack))
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(exc.value) == reason


def test_valid_token_passes_auth_through_envoy(stack):  # type: ignore[no-untyped-def]
    # GetBillingStatus answers for the token's own account: the token passed authentication.
    resp = stack.request(
        "GET", "/api/v1/billing", headers={"authorization": f"Bearer {ACCOUNT['token']}"}
    )
    assert resp.status == 200
    assert resp.json()["billing_account_id"] == ACCOUNT["id"]
    assert resp.json()["plan"] == "free"


def test_a_token_from_a_replica_whose_clock_runs_2s_ahead_is_accepted(stack):  # type: ignore[no-untyped-def]
    ahead = int(time.time()) + 2
    token = sign(claims(stack, iat=ahead, exp=ahead + 600))
    assert grpc_billing_status(stack, token).billing_account_id == ACCOUNT["id"]  # past auth
    resp = stack.request("GET", "/api/v1/billing", headers={"authorization": f"Bearer {token}"})
    assert resp.status == 200


def test_token_signed_with_an_older_rotation_key_is_accepted(stack):  # type: ignore[no-untyped-def]
    token = sign(claims(stack), key=K1, kid="k1")
    assert grpc_billing_status(stack, token).billing_account_id == ACCOUNT["id"]


def test_issued_tokens_are_signed_with_the_signing_key(stack):  # type: ignore[no-untyped-def]
    header = jwt.get_unverified_header(ACCOUNT["token"])
    assert header == {"alg": "HS256", "kid": "k2", "typ": "JWT"}
    payload = jwt.decode(
        ACCOUNT["token"], K2, algorithms=["HS256"], audience=stack.settings.jwt_audience
    )
    assert {"iss", "aud", "sub", "acct", "uid", "scp", "iat", "exp"} <= set(payload)
    assert payload["exp"] - payload["iat"] == 900


def test_missing_scope_is_403_through_envoy(stack):  # type: ignore[no-untyped-def]
    portal_only = stack.request(
        "POST",
        "/mgt/v1/token/issue",
        {"principal_id": "p-battery", "scopes": ["portal"]},
        {"x-api-key": SERVICE_KEY},
    ).json()["access_token"]
    resp = stack.request(
        "POST",
        "/api/v1/checkout/sessions",
        {"items": []},
        {"authorization": f"Bearer {portal_only}"},
    )
    assert resp.status == 403
    assert resp.reason == "SCOPE_MISSING"


def test_missing_scope_is_permission_denied_over_grpc(stack):  # type: ignore[no-untyped-def]
    token = sign(claims(stack, scp=["portal"]))
    with pytest.raises(grpc.RpcError) as exc:
        grpc_billing_status(stack, token)
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(exc.value) == "SCOPE_MISSING"


def test_bearer_on_service_only_rpc_is_403_through_envoy(stack):  # type: ignore[no-untyped-def]
    resp = stack.request(
        "POST",
        "/mgt/v1/token/issue",
        {"principal_id": "x"},
        {"authorization": f"Bearer {ACCOUNT['token']}"},
    )
    assert resp.status == 403
    assert resp.reason == "SERVICE_KEY_REQUIRED"


def test_bearer_on_service_only_rpc_is_permission_denied_over_grpc(stack):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as ch:
        stub = token_pb2_grpc.TokenServiceStub(ch)
        with pytest.raises(grpc.RpcError) as exc:
            stub.IssueToken(
                token_pb2.IssueTokenRequest(principal_id="x"),
                metadata=(("authorization", f"Bearer {ACCOUNT['token']}"),),
                timeout=10,
            )
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(exc.value) == "SERVICE_KEY_REQUIRED"


def test_service_key_beside_a_bearer_on_service_only_rpc_is_ambiguous_over_grpc(stack):  # type: ignore[no-untyped-def]
    """Over gRPC there is no surface: a service-only RPC with both credentials is refused
    naming the pair, not as if no key had been sent."""
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as ch:
        stub = token_pb2_grpc.TokenServiceStub(ch)
        with pytest.raises(grpc.RpcError) as exc:
            stub.IssueToken(
                token_pb2.IssueTokenRequest(principal_id="x-ambiguous"),
                metadata=(
                    ("x-api-key", SERVICE_KEY),
                    ("authorization", f"Bearer {ACCOUNT['token']}"),
                ),
                timeout=10,
            )
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(exc.value) == "AMBIGUOUS_CREDENTIALS"
        # An RPC that takes either still acts as the token beside a key (seed 003).
        status = checkout_pb2_grpc.CheckoutServiceStub(ch).GetBillingStatus(
            checkout_pb2.GetBillingStatusRequest(),
            metadata=(
                ("x-api-key", SERVICE_KEY),
                ("authorization", f"Bearer {ACCOUNT['token']}"),
            ),
            timeout=10,
        )
    assert status.billing_account_id == ACCOUNT["id"]


def test_authorization_without_bearer_scheme_is_401(stack):  # type: ignore[no-untyped-def]
    resp = stack.request("GET", "/api/v1/billing", headers={"authorization": ACCOUNT["token"]})
    assert resp.status == 401


DUPLICATED = {
    # (metadata of the call, the reason): a credential header sent twice is ambiguous, whichever
    # of the two comes first and whether or not one of them is valid.
    "token_then_garbage": (
        lambda: (
            ("authorization", f"Bearer {ACCOUNT['token']}"),
            ("authorization", "Bearer garbage"),
        ),
        "TOKEN_INVALID",
    ),
    "token_twice": (
        lambda: (("authorization", f"Bearer {ACCOUNT['token']}"),) * 2,
        "TOKEN_INVALID",
    ),
    "key_then_garbage": (
        lambda: (("x-api-key", SERVICE_KEY), ("x-api-key", "garbage")),
        "SERVICE_KEY_INVALID",
    ),
    "key_twice": (lambda: (("x-api-key", SERVICE_KEY),) * 2, "SERVICE_KEY_INVALID"),
}


@pytest.mark.parametrize("case", sorted(DUPLICATED))
def test_a_credential_header_sent_twice_is_401_over_grpc(stack, case):  # type: ignore[no-untyped-def]
    metadata, reason = DUPLICATED[case]
    with pytest.raises(grpc.RpcError) as exc:
        grpc_billing_status_md(stack, metadata())
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(exc.value) == reason


@pytest.mark.parametrize("case", sorted(DUPLICATED))
def test_a_credential_header_sent_twice_is_401_through_envoy(stack, case):  # type: ignore[no-untyped-def]
    metadata, _reason = DUPLICATED[case]
    path = f"/api/v1/billing?account={ACCOUNT['id']}"
    # urllib keeps one value per header name: the pairs go on a raw connection instead.
    host, port = stack.rest_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("GET", path)
    for name, value in metadata():
        conn.putheader(name, value)
    conn.endheaders()
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 401


def grpc_billing_status_md(stack, metadata):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as ch:
        stub = checkout_pb2_grpc.CheckoutServiceStub(ch)
        return stub.GetBillingStatus(
            checkout_pb2.GetBillingStatusRequest(account=ACCOUNT["id"]),
            metadata=metadata,
            timeout=10,
        )
