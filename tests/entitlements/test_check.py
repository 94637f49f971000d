"""CheckEntitlement and ListEntitlements through real stubs, after purchases in the sandbox,
on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from billing.v1 import catalog_pb2, entitlement_pb2
from tests.checkout.support import World
from tests.entitlements.support import E, bought, check, events, listing, metric
from tests.helpers import error_reason

K = entitlement_pb2
CREDITS = [catalog_pb2.CreditGrantSpec(credit_type="tokens", amount="10", on_purchase=True)]


def pro_plan(world: World) -> catalog_pb2.Price:
    metric(world, "api_calls", "api.call")
    return world.price(
        "pro",
        grants=CREDITS,
        entitlements=[
            E(feature="pro", value="gold"),
            E(feature="calls", metric="api_calls", limit="5"),
            E(feature="generate", credit_type="tokens", amount="4"),
        ],
    )


def test_nothing_is_held_before_the_purchase(world: World):
    pro_plan(world)
    token, account = world.token()
    got = check(world, "pro", token=token)
    assert (got.billing_account_id, got.feature, got.allowed) == (account, "pro", False)
    assert got.kind == K.ENTITLEMENT_KIND_UNSPECIFIED
    assert got.as_of_time.seconds > 0
    assert list(listing(world, token=token).entitlements) == []


def test_buying_pro_allows_its_boolean_feature(world: World):
    price = pro_plan(world)
    token, account = world.token()
    before = dt.datetime.now(dt.UTC)
    bought(world, token, "pro")
    got = check(world, "pro", token=token)
    assert got.kind == K.ENTITLEMENT_KIND_BOOLEAN
    assert got.allowed and got.value == "gold"
    assert list(got.price_ids) == [price.price_id]
    assert got.as_of_time.ToDatetime(tzinfo=dt.UTC) >= before
    # The service key names the account, by id or principal id, with the same answer.
    by_id = check(world, "pro", account=account)
    assert by_id.allowed and by_id.billing_account_id == account
    assert not check(world, "enterprise", token=token).allowed


def test_a_metered_feature_counts_every_ingested_event_of_the_period(world: World):
    pro_plan(world)
    token, account = world.token()
    bought(world, token, "pro")
    fresh = check(world, "calls", token=token)
    assert fresh.kind == K.ENTITLEMENT_KIND_METERED
    assert (fresh.metric, fresh.limit, fresh.used, fresh.remaining) == ("api_calls", "5", "0", "5")
    assert fresh.allowed
    start = fresh.period_start_time.ToDatetime(tzinfo=dt.UTC)
    end = fresh.period_end_time.ToDatetime(tzinfo=dt.UTC)
    assert start <= fresh.as_of_time.ToDatetime(tzinfo=dt.UTC) < end

    events(world, account, "api.call", 3)
    events(world, account, "other.event", 2)  # another event name: not this metric
    events(world, account, "api.call", 4, when=start - dt.timedelta(seconds=1))  # before the period
    got = check(world, "calls", token=token)
    assert (got.used, got.remaining, got.allowed) == ("3", "2", True)

    events(world, account, "api.call", 2)
    got = check(world, "calls", account=account)
    assert (got.used, got.remaining, got.allowed) == ("5", "0", False)
    events(world, account, "api.call", 1)
    assert (
        check(world, "calls", token=token).used,
        check(world, "calls", token=token).remaining,
    ) == ("6", "0")


def test_a_credit_backed_feature_compares_the_balance_with_what_an_action_needs(world: World):
    pro_plan(world)
    token, account = world.token()
    bought(world, token, "pro")
    got = check(world, "generate", token=token)
    assert got.kind == K.ENTITLEMENT_KIND_CREDIT
    assert (got.credit_type, got.amount, got.balance, got.allowed) == ("tokens", "4", "10", True)
    from billing.v1 import credit_pb2
    from tests.conftest import SERVICE_MD

    world.credits.DebitCredits(
        credit_pb2.DebitCreditsRequest(
            account=account, credit_type="tokens", amount="7", request_id="spend-7"
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )
    got = check(world, "generate", token=token)
    assert (got.balance, got.allowed) == ("3", False)


def test_list_entitlements_gives_every_feature_by_name_and_pages(world: World):
    pro_plan(world)
    token, _ = world.token()
    bought(world, token, "pro")
    every = listing(world, token=token)
    assert [e.feature for e in every.entitlements] == ["calls", "generate", "pro"]
    assert [e.allowed for e in every.entitlements] == [True, True, True]
    assert every.as_of_time.seconds > 0 and every.next_page_token == ""
    first = listing(world, token=token, page_size=2)
    assert [e.feature for e in first.entitlements] == ["calls", "generate"]
    second = listing(world, token=token, page_size=2, page_token=first.next_page_token)
    assert [e.feature for e in second.entitlements] == ["pro"]
    assert second.next_page_token == ""


def test_a_one_time_purchase_grants_its_features_and_quantities_multiply_limits(world: World):
    metric(world, "exports", "export.done")
    world.price(
        "export-pack",
        recurring=False,
        stackable=True,
        amount=500,
        entitlements=[E(feature="exports", metric="exports", limit="10"), E(feature="csv")],
    )
    token, account = world.token()
    bought(world, token, "export-pack", quantity=2)
    got = check(world, "exports", token=token)
    assert (got.limit, got.used) == ("20", "0")
    # A one-time purchase has no billing period: the calendar month (UTC) is counted.
    start = got.period_start_time.ToDatetime(tzinfo=dt.UTC)
    assert (start.day, start.hour, start.minute) == (1, 0, 0)
    bought(world, token, "export-pack")
    assert check(world, "exports", token=token).limit == "30"
    assert check(world, "csv", account=account).allowed


def test_a_canceled_subscription_grants_nothing(world: World):
    pro_plan(world)
    token, _ = world.token()
    bought(world, token, "pro")
    assert check(world, "pro", token=token).allowed
    (sub,) = world.stripe.v1.subscriptions.list(params={"limit": 100}).data  # this world's only
    world.stripe.v1.subscriptions.cancel(sub.id)
    world.settled()
    got = check(world, "pro", token=token)
    assert (got.allowed, got.kind) == (False, K.ENTITLEMENT_KIND_UNSPECIFIED)


def test_a_bearer_cannot_ask_about_another_account(world: World):
    token, _ = world.token()
    _, other = world.token()
    for call in (lambda: check(world, "pro", token=token, account=other),):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("feature", ["", "   ", "x" * 101])
def test_a_bad_feature_is_refused_with_a_stable_reason(world: World, feature: str):
    token, _ = world.token()
    with pytest.raises(grpc.RpcError) as err:
        check(world, feature, token=token)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) in {"FIELD_REQUIRED", "FIELD_INVALID", "FIELD_TOO_LONG"}


def test_a_service_caller_must_name_the_account(world: World):
    with pytest.raises(grpc.RpcError) as err:
        check(world, "pro")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_metered_feature_on_a_metric_that_does_not_exist_allows_nothing(world: World):
    world.price("pro", entitlements=[E(feature="calls", metric="no_such_metric", limit="5")])
    token, _ = world.token()
    bought(world, token, "pro")
    got = check(world, "calls", token=token)
    assert (got.kind, got.metric, got.limit) == (K.ENTITLEMENT_KIND_METERED, "no_such_metric", "5")
    assert (got.allowed, got.used) == (False, "")
