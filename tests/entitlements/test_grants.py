"""What held prices grant: the pure rules of entitlements.grants, without a database."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from tollbooth.entitlements.grants import HeldPrice, Kind, current_period, grants, month_of
from tollbooth.subscriptions.repository import HOLDING_PURCHASE, HOLDING_SUBSCRIPTION, Holding

NOW = dt.datetime(2026, 12, 2, 13, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def held(
    price_id,
    price=(),
    product=(),
    *,
    source=HOLDING_SUBSCRIPTION,
    quantity=1,
    age_days=1,
    period=(NOW - 2 * DAY, NOW + 28 * DAY),
    state="active",
    cancel_at_period_end=False,
):  # type: ignore[no-untyped-def]
    start, end = period if source == HOLDING_SUBSCRIPTION else (None, None)
    holding = Holding(
        price_id, quantity, source, start, end, NOW - age_days * DAY, state, cancel_at_period_end
    )
    return HeldPrice(holding, list(price), list(product))


def test_a_price_grants_its_own_and_its_products_features_the_price_winning():
    out = grants(
        [
            held(
                "p1",
                [{"feature": "api", "value": "full"}],
                [{"feature": "api", "value": "basic"}, {"feature": "sso", "value": ""}],
            )
        ],
        NOW,
    )
    assert {f: (g.kind, g.value) for f, g in out.items()} == {
        "api": (Kind.BOOLEAN, "full"),
        "sso": (Kind.BOOLEAN, ""),
    }


def test_metered_limits_add_up_times_quantity_over_the_first_subscriptions_period():
    period = (NOW - 5 * DAY, NOW + 25 * DAY)
    out = grants(
        [
            held("plan", [{"feature": "calls", "metric": "api", "limit": "100"}], period=period),
            held(
                "seats",
                [{"feature": "calls", "metric": "api", "limit": "2.5"}],
                quantity=4,
                age_days=0,
            ),
            held(
                "pack",
                [{"feature": "calls", "metric": "api", "limit": "10"}],
                source=HOLDING_PURCHASE,
            ),
            # The same feature on another metric does not add to this one.
            held(
                "odd",
                [{"feature": "calls", "metric": "other", "limit": "7"}],
                source=HOLDING_PURCHASE,
                age_days=9,
            ),
        ],
        NOW,
    )
    calls = out["calls"]
    assert calls.kind is Kind.METERED and calls.metric == "api"
    assert calls.limit == Decimal("120")  # 100 + 2.5 * 4 + 10
    # The newest subscription comes first: "seats" (created today) decides the period.
    assert calls.period == (NOW - 2 * DAY, NOW + 28 * DAY)
    assert calls.price_ids == ["seats", "plan", "pack", "odd"]


def test_the_first_holding_decides_the_kind():
    out = grants(
        [
            held("newer", [{"feature": "gen", "credit_type": "tokens", "amount": "3"}], age_days=0),
            held("older", [{"feature": "gen", "credit_type": "tokens", "amount": "9"}]),
            held("bought", [{"feature": "gen"}], source=HOLDING_PURCHASE),
        ],
        NOW,
    )
    gen = out["gen"]
    assert (gen.kind, gen.credit_type, gen.amount) == (Kind.CREDIT, "tokens", Decimal("3"))


def test_a_purchase_only_metered_feature_counts_the_calendar_month():
    out = grants(
        [held("pack", [{"feature": "x", "metric": "m", "limit": "1"}], source=HOLDING_PURCHASE)],
        NOW,
    )
    assert out["x"].period == (
        dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
    )


def test_an_ended_period_rolls_forward_by_its_own_length():
    start, end = NOW - 65 * DAY, NOW - 35 * DAY  # two renewals not yet recorded
    assert current_period(start, end, NOW) == (NOW - 5 * DAY, NOW + 25 * DAY)
    assert current_period(end, end + 30 * DAY, end) == (end, end + 30 * DAY)
    assert current_period(end, end + 30 * DAY, end + 30 * DAY) == (end + 30 * DAY, end + 60 * DAY)
    assert current_period(None, None, NOW) == month_of(NOW)


def test_month_of_december_ends_in_january():
    assert month_of(dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC))[1] == dt.datetime(
        2027, 1, 1, tzinfo=dt.UTC
    )


def test_only_active_trialing_and_past_due_subscriptions_grant():
    features = {
        state: set(grants([held("p", [{"feature": "pro"}], state=state)], NOW))
        for state in ("active", "trialing", "past_due", "unpaid", "paused", "incomplete")
    }
    assert features == {
        "active": {"pro"},
        "trialing": {"pro"},
        "past_due": {"pro"},
        "unpaid": set(),
        "paused": set(),
        "incomplete": set(),
    }


def test_a_plan_set_to_cancel_grants_until_its_period_end_exclusive():
    end = NOW + DAY
    ending = held(
        "p", [{"feature": "pro"}], period=(end - 30 * DAY, end), cancel_at_period_end=True
    )
    assert set(grants([ending], end - dt.timedelta(microseconds=1))) == {"pro"}
    assert set(grants([ending], end)) == set()
    # Not set to cancel: renewing, its renewal not recorded yet; still granted.
    renewing = held("p", [{"feature": "pro"}], period=(end - 30 * DAY, end))
    assert set(grants([renewing], end + DAY)) == {"pro"}
    # A one-time purchase beside it still grants its own.
    bought = held("b", [{"feature": "pro"}], source=HOLDING_PURCHASE)
    assert grants([ending, bought], end)["pro"].price_ids == ["b"]
