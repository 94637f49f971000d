"""The redirect allow-list (issue 14, finding 10): success, cancel and return URLs."""

from __future__ import annotations

import grpc
import pytest

from billing.v1 import checkout_pb2
from tests.checkout.support import World
from tests.conftest import bearer_md, make_env
from tests.helpers import error_reason
from tollbooth import errors
from tollbooth.checkout.redirects import check_redirect
from tollbooth.config import DEFAULT_CORS_ORIGINS, DEFAULT_SANDBOX_PORT, ConfigError, Settings
from tollbooth.db.models import BillingAccount, CheckoutSession

ALLOWED = ("https://app.example", "http://localhost:3000")


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example/ok",
        "https://APP.example:443/ok?cs={CHECKOUT_SESSION_ID}",
        "https://app.example/ok?session_id={CHECKOUT_SESSION_ID}#top",
        "http://localhost:3000/billing",
    ],
)
def test_urls_on_the_allow_list_pass_as_given(url: str) -> None:
    assert check_redirect(url, "success_url", ALLOWED, required=True) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/ok",
        "https://app.example.evil.example/ok",
        "http://app.example/ok",  # another scheme is another origin
        "https://app.example:8443/ok",
        "http://localhost:3001/",
        "https://app.example@evil.example/",
        "https://user:pw@app.example/",
        "https://app.example\\@evil.example/",
        "https:\\\\evil.example",
        "https://app.example/ok\r\nLocation: https://evil.example",
        "https://app.example/ok\n",
        "https://app.example/\tok",
        "https://app.example/\x00",
        "https://app.example/\x7f",
        "javascript:alert(1)",
        "//evil.example/",
        "/relative",
        "https://app.example:99999/",
    ],
)
def test_urls_off_the_allow_list_or_with_tricks_are_refused(url: str) -> None:
    with pytest.raises(errors.DomainError) as err:
        check_redirect(url, "cancel_url", ALLOWED, required=True)
    assert err.value.reason == "REDIRECT_URL_NOT_ALLOWED"
    assert err.value.kind == errors.Kind.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "url",
    [
        "https://yourapp.com/success?cs={CHECKOUT_SESSION_ID}",
        "http://evil.example:8080/ok",
        "https://[::1]:8443/back",
    ],
)
def test_a_backend_may_name_any_absolute_http_url(url: str) -> None:
    """`any_origin` (a call carrying the service key): the origin is not checked."""
    assert check_redirect(url, "success_url", ALLOWED, required=True, any_origin=True) == url
    assert (
        check_redirect("HTTPS://yourapp.com/Ok", "cancel_url", (), required=True, any_origin=True)
        == "https://yourapp.com/Ok"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://yourapp.com@evil.example/",
        "https://user:pw@yourapp.com/",
        "https://yourapp.com\\@evil.example/",
        "https:\\\\evil.example",
        "https://yourapp.com/ok\r\nLocation: https://evil.example",
        "https://yourapp.com/\tok",
        "https://yourapp.com/\x00",
        "https://yourapp.com/\x7f",
        "https://yourapp.com/" + "x" * 2048,
        "javascript:alert(1)",
        "data:text/html,hi",
        "ftp://yourapp.com/",
        "//evil.example/",
        "/relative",
        "https://yourapp.com:99999/",
        "https://:443/",
    ],
)
def test_a_backend_is_held_to_every_other_check(url: str) -> None:
    with pytest.raises(errors.DomainError) as err:
        check_redirect(url, "return_url", ALLOWED, required=True, any_origin=True)
    assert err.value.reason == "REDIRECT_URL_NOT_ALLOWED"
    assert err.value.kind == errors.Kind.INVALID_ARGUMENT


def test_the_allow_list_defaults_to_the_cors_origins_and_refuses_non_origins() -> None:
    env = make_env("sqlite:///:memory:")
    del env["BILLING_REDIRECT_ORIGINS"]
    # On the sandbox, its "back in your app" page is allowed too; with a real key, only CORS.
    sandbox = (
        f"http://localhost:{DEFAULT_SANDBOX_PORT}",
        f"http://127.0.0.1:{DEFAULT_SANDBOX_PORT}",
    )
    assert Settings.from_env(env).redirect_origins == DEFAULT_CORS_ORIGINS + sandbox
    live = {**env, "STRIPE_API_KEY": "sk_test_x", "STRIPE_API_BASE": "http://127.0.0.1:9"}
    assert Settings.from_env(live).redirect_origins == DEFAULT_CORS_ORIGINS
    cors = {**live, "BILLING_CORS_ORIGINS": "https://shop.example"}
    assert Settings.from_env(cors).redirect_origins == ("https://shop.example",)
    both = {**cors, "BILLING_REDIRECT_ORIGINS": "https://Pay.example/ , http://x.example:8080"}
    assert Settings.from_env(both).redirect_origins == (
        "https://pay.example",
        "http://x.example:8080",
    )
    for bad in ("https://pay.example/path", "ftp://pay.example", "pay.example"):
        with pytest.raises(ConfigError):
            Settings.from_env({**env, "BILLING_REDIRECT_ORIGINS": bad})


def test_a_refused_redirect_creates_nothing_over_grpc(sqlite_world: World) -> None:
    world = sqlite_world
    world.price("pro", group="plan")
    token, account = world.token()
    for field in ("success_url", "cancel_url"):
        request = checkout_pb2.CreateCheckoutSessionRequest(
            items=[checkout_pb2.CheckoutItem(lookup_key="pro")],
            success_url="https://app.example/ok",
            request_id=f"bad-{field}",
        )
        setattr(request, field, "https://app.example@evil.example/")
        with pytest.raises(grpc.RpcError) as err:
            world.checkout.CreateCheckoutSession(request, metadata=bearer_md(token), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(err.value) == "REDIRECT_URL_NOT_ALLOWED"
    with pytest.raises(grpc.RpcError) as err:
        world.checkout.CreatePortalSession(
            checkout_pb2.CreatePortalSessionRequest(return_url="https://evil.example/"),
            metadata=bearer_md(token),
            timeout=10,
        )
    assert error_reason(err.value) == "REDIRECT_URL_NOT_ALLOWED"
    assert world.count(CheckoutSession) == 0
    with world.deps.db.transaction(readonly=True) as session:
        row = session.get(BillingAccount, account)
        assert row is not None and row.stripe_customer_id is None
    assert world.stripe.v1.customers.list(params={"limit": 10}).data == []
