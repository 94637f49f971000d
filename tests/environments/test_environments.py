"""Test and live environments in one deployment, on PostgreSQL (two databases): seed 003's
`?environment=` follows the caller's credential, webhooks are routed by the secret that
verifies them, and a token is good in the environment that signed it only.

The matrix of every id-taking RPC is tests/environments/test_cross_environment_matrix.py; the
settings' refusals are tests/environments/test_settings.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import create_engine, select

from billing.v1 import (
    account_pb2,
    account_pb2_grpc,
    credit_pb2,
    credit_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from tests.environments.objects import unique
from tests.environments.support import Environment, Pair, two_environments
from tests.helpers import error_reason, keyed
from tollbooth.db.models import StripeEvent


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with two_environments(tmp_path_factory.mktemp("environments")) as running:
        yield running


def stored_event(env: Environment, event_id: str) -> StripeEvent | None:
    engine = create_engine(env.database_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(StripeEvent).where(StripeEvent.event_id == event_id)).first()
            return row  # type: ignore[return-value]
    finally:
        engine.dispose()


def rest(pair: Pair, env: Environment, method: str, path: str, body: object = None):  # type: ignore[no-untyped-def]
    return pair.rest(method, path, body, {"x-api-key": env.service_key})


# -- seed 003's ?environment= -----------------------------------------------------------------


@pytest.mark.parametrize("asked", ["test", "live"])
def test_environment_must_be_the_one_of_the_key(pair: Pair, asked: str) -> None:
    for env in (pair.test, pair.live):
        listed = rest(pair, env, "GET", f"/mgt/v1/customers?limit=5&environment={asked}")
        if env.name == asked:
            assert listed.status == 200, listed.body
        else:
            assert listed.status == 403 and listed.reason == "ENVIRONMENT_MISMATCH"


@pytest.mark.parametrize("asked", ["test", "live"])
def test_checkouts_environment_must_be_the_one_of_the_key_too(pair: Pair, asked: str) -> None:
    """CheckoutService answers `?environment=` by the caller's environment, as CustomerService
    does, not by its Stripe key's mode (the live environment here runs on a test-mode key)."""
    for env in (pair.test, pair.live):
        got = rest(pair, env, "GET", f"/api/v1/checkout/sessions/cs_none?environment={asked}")
        made = rest(
            pair,
            env,
            "POST",
            f"/api/v1/checkout/sessions?environment={asked}",
            {"account": "acct_none", "success_url": "https://app.example/ok"},
        )
        if env.name == asked:
            assert (got.status, made.status) == (404, 404), (got.body, made.body)
        else:
            assert (got.status, got.reason) == (403, "ENVIRONMENT_MISMATCH"), got.body
            assert (made.status, made.reason) == (403, "ENVIRONMENT_MISMATCH"), made.body


def test_a_customer_made_with_the_live_key_is_live_only(pair: Pair) -> None:
    email = f"{unique('live')}@example.com"
    made = rest(
        pair,
        pair.live,
        "POST",
        "/mgt/v1/customers?environment=live",
        {"email": email, "name": "Live Customer", "metadata": {"user_id": "u-1"}},
    )
    assert made.status == 200, made.body
    customer_id = made.json()["id"]
    got = rest(pair, pair.live, "GET", f"/mgt/v1/customers/{customer_id}?environment=live")
    assert got.status == 200 and got.json()["email"] == email
    refused = rest(pair, pair.test, "GET", f"/mgt/v1/customers/{customer_id}?environment=live")
    assert refused.status == 403 and refused.reason == "ENVIRONMENT_MISMATCH"
    unseen = rest(pair, pair.test, "GET", f"/mgt/v1/customers/{customer_id}")
    assert unseen.status == 404
    # Seed 003's list shows it to its own environment only.
    live_ids = {
        c["id"] for c in rest(pair, pair.live, "GET", "/mgt/v1/customers?limit=100").json()["data"]
    }
    test_ids = {
        c["id"] for c in rest(pair, pair.test, "GET", "/mgt/v1/customers?limit=100").json()["data"]
    }
    assert customer_id in live_ids and customer_id not in test_ids


# -- tokens and keys ----------------------------------------------------------------------------


def test_a_token_works_in_the_environment_that_signed_it_only(pair: Pair) -> None:
    tokens = token_pb2_grpc.TokenServiceStub(pair.channel)
    credits = credit_pb2_grpc.CreditServiceStub(pair.channel)
    alias = unique("same-principal")  # the same principal in both: two accounts
    issued = {
        env.name: tokens.IssueToken(
            token_pb2.IssueTokenRequest(principal_id=alias, scopes=["credits:read"]),
            metadata=env.md,
            timeout=10,
        )
        for env in (pair.test, pair.live)
    }
    assert issued["test"].billing_account_id != issued["live"].billing_account_id
    credits.GrantCredits(
        keyed(credit_pb2.GrantCreditsRequest(account=alias, credit_type="units", amount="7")),
        metadata=pair.live.md,
        timeout=10,
    )
    for name, expected in (("test", "0"), ("live", "7")):
        balance = credits.GetBalance(
            credit_pb2.GetBalanceRequest(type="units"),
            metadata=(("authorization", f"Bearer {issued[name].access_token}"),),
            timeout=10,
        )
        assert balance.balance == expected, name
    # REST, through Envoy: the same tokens, the same answers.
    for name, expected in (("test", "0"), ("live", "7")):
        got = pair.rest(
            "GET",
            "/api/v1/credits/balance?type=units",
            headers={"authorization": f"Bearer {issued[name].access_token}"},
        )
        assert got.status == 200 and got.json()["balance"] == expected, (name, got.body)


def test_a_token_beside_a_key_of_the_other_environment_is_environment_mismatch(
    pair: Pair,
) -> None:
    """Seed 003's key and token together: a token signed by the other environment than the
    key's is refused, over gRPC and REST, whichever way round; matching ones act as the token."""
    tokens = token_pb2_grpc.TokenServiceStub(pair.channel)
    credits = credit_pb2_grpc.CreditServiceStub(pair.channel)
    alias = unique("mixed")
    issued = {
        env.name: tokens.IssueToken(
            token_pb2.IssueTokenRequest(principal_id=alias, scopes=["credits:read"]),
            metadata=env.md,
            timeout=10,
        )
        for env in (pair.test, pair.live)
    }
    for key_env, token_env in (("test", "live"), ("live", "test")):
        bearer = ("authorization", f"Bearer {issued[token_env].access_token}")
        with pytest.raises(grpc.RpcError) as err:
            credits.GetBalance(
                credit_pb2.GetBalanceRequest(type="units"),
                metadata=(*pair.env(key_env).md, bearer),
                timeout=10,
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, (key_env, token_env)
        assert error_reason(err.value) == "ENVIRONMENT_MISMATCH"
        got = pair.rest(
            "GET",
            "/api/v1/credits/balance?type=units",
            headers={"x-api-key": pair.env(key_env).service_key, bearer[0]: bearer[1]},
        )
        assert (got.status, got.reason) == (403, "ENVIRONMENT_MISMATCH"), got.body
    for env in (pair.test, pair.live):
        bearer = ("authorization", f"Bearer {issued[env.name].access_token}")
        same = credits.GetBalance(
            credit_pb2.GetBalanceRequest(type="units"), metadata=(*env.md, bearer), timeout=10
        )
        assert same.billing_account_id == issued[env.name].billing_account_id


def test_a_key_of_neither_environment_is_refused(pair: Pair) -> None:
    stub = account_pb2_grpc.AccountServiceStub(pair.channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.ListAccounts(
            account_pb2.ListAccountsRequest(), metadata=(("x-api-key", "x" * 24),), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_same_codes_and_aliases_are_two_objects(pair: Pair) -> None:
    usage = usage_pb2_grpc.UsageServiceStub(pair.channel)
    accounts = account_pb2_grpc.AccountServiceStub(pair.channel)
    code, alias = unique("m").replace("-", "_"), unique("alias")
    for env in (pair.test, pair.live):
        usage.CreateMetric(
            keyed(
                usage_pb2.CreateMetricRequest(
                    metric=usage_pb2.Metric(
                        code=code,
                        name=env.name,
                        event_name="x",
                        aggregation=usage_pb2.AGGREGATION_COUNT,
                    )
                )
            ),
            metadata=env.md,
            timeout=10,
        )
        accounts.CreateAccount(
            keyed(account_pb2.CreateAccountRequest(name=env.name, alias=alias)),
            metadata=env.md,
            timeout=10,
        )
    for env in (pair.test, pair.live):
        metric = usage.GetMetric(usage_pb2.GetMetricRequest(code=code), metadata=env.md, timeout=10)
        account = accounts.GetAccount(
            account_pb2.GetAccountRequest(account=alias), metadata=env.md, timeout=10
        )
        assert metric.name == env.name and account.name == env.name


# -- webhooks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["sidecar", "envoy"])
def test_an_event_lands_in_the_database_of_the_secret_that_verifies_it(
    pair: Pair, where: str
) -> None:
    url = pair.sidecar_url if where == "sidecar" else f"{pair.stack.rest_url}/v1/billing/webhooks"
    routed = Pair(pair.stack, pair.channel, pair.test, pair.live, url)
    for env, other in ((pair.test, pair.live), (pair.live, pair.test)):
        status, answer, event_id = routed.send_event(env.webhook_secret)
        assert status == 200 and answer["received"] is True, answer
        row = stored_event(env, event_id)
        assert row is not None and row.status == "ignored"  # an event type nobody acts on
        assert stored_event(other, event_id) is None


@pytest.mark.parametrize("env_name", ["test", "live"])
def test_an_event_of_the_wrong_livemode_is_refused_and_stored_nowhere(
    pair: Pair, env_name: str
) -> None:
    # Both environments run on test-mode keys here (the live one on the sandbox): the events
    # of their Stripe accounts have livemode false, so livemode true is refused by both. The
    # settings tests show a live-mode key expecting livemode true.
    env = pair.env(env_name)
    status, answer, event_id = pair.send_event(env.webhook_secret, livemode=True)
    assert status == 400 and answer["error"]["reason"] == "WEBHOOK_LIVEMODE_MISMATCH"
    assert stored_event(pair.test, event_id) is None
    assert stored_event(pair.live, event_id) is None


def test_an_event_no_secret_verifies_is_refused(pair: Pair) -> None:
    status, answer, event_id = pair.send_event("whsec_of_nobody")
    assert status == 400 and answer["error"]["reason"] == "WEBHOOK_SIGNATURE_INVALID"
    assert stored_event(pair.test, event_id) is None and stored_event(pair.live, event_id) is None


def test_the_live_inbox_is_listed_with_the_live_key_only(pair: Pair) -> None:
    _, _, event_id = pair.send_event(pair.live.webhook_secret)
    listed = {}
    for env in (pair.test, pair.live):
        page = rest(pair, env, "GET", "/mgt/v1/stripe/events?page_size=100")
        assert page.status == 200, page.body
        listed[env.name] = {e["event_id"] for e in page.json().get("events", [])}
    assert event_id in listed["live"] and event_id not in listed["test"]
    replay = rest(
        pair,
        pair.test,
        "POST",
        "/mgt/v1/stripe/events:replay",
        {"event_id": event_id, "request_id": unique("r")},
    )
    assert replay.status == 404, replay.body
