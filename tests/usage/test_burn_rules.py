"""The units rule and the precision rule of the credit burn, without a database."""

from __future__ import annotations

import decimal
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tollbooth.usage import burn


@dataclass
class Ev:
    unique_id: str
    account_id: str = "acct_a"
    event_name: str = "api_call"
    properties: dict[str, Any] = field(default_factory=dict)


def metric(agg: str = "count", prop: str = "", rate: str = "1", **kw: Any) -> burn.BurningMetric:
    m = burn.metric(
        kw.get("code", "m"),
        kw.get("event_name", "api_call"),
        agg,
        prop,
        kw.get("filters"),
        kw.get("credit_type", "units"),
        rate,
    )
    assert m is not None
    return m


def test_count_units_are_one_per_event_whatever_its_properties() -> None:
    m = metric("count")
    assert burn.units(m, {}) == 1
    assert burn.units(m, {"tokens": -5}) == 1


def test_sum_units_are_the_positive_number_of_the_property() -> None:
    m = metric("sum", "t")
    assert [
        burn.units(m, {"t": v})
        for v in (1500, "12.50", 0.1, -3, 0, "abc", True, None, {"a": 1}, "1e3")
    ] == [Decimal(1500), Decimal("12.50"), Decimal("0.1")] + [Decimal(0)] * 7
    assert burn.units(m, {}) == 0


def test_filters_decide_whether_an_event_burns() -> None:
    m = metric("count", filters=[{"property": "model", "values": ["large", "1"]}])
    assert [burn.units(m, p) for p in ({"model": "large"}, {"model": 1}, {"model": "x"}, {})] == [
        1,
        1,
        0,
        0,
    ]


def test_aggregations_without_units_per_event_cannot_burn() -> None:
    for agg in ("max", "latest", "count_unique", "unknown"):
        assert burn.metric("m", "api_call", agg, "t", [], "units", "1") is None
    assert burn.metric("m", "api_call", "count", "", [], "", "") is None


def test_amount_is_exact_up_to_18_fractional_digits() -> None:
    assert burn.amount(Decimal("0.000000001"), Decimal("0.000000001")) == Decimal("1E-18")
    assert burn.amount(Decimal("12345678901234567890.123456789012345678"), Decimal(1)) == Decimal(
        "12345678901234567890.123456789012345678"
    )
    assert str(burn.amount(Decimal("0.5"), Decimal(3))) == "1.5"  # canonical, no trailing zeros


def test_amount_rounds_half_to_even_at_the_18th_digit() -> None:
    tiny = Decimal("1E-18")
    assert burn.amount(Decimal("0.5"), tiny) == 0  # 0.5e-18 -> 0 (even)
    assert burn.amount(Decimal("1.5"), tiny) == 2 * tiny
    assert burn.amount(Decimal("2.5"), tiny) == 2 * tiny
    assert burn.amount(Decimal("0.51"), tiny) == tiny


def test_amount_is_exact_for_the_largest_double_and_rate() -> None:
    rate = Decimal("99999999999999999999.999999999999999999")
    units = Decimal(repr(1.7976931348623157e308))
    exact = decimal.Context(prec=2000).multiply(rate, units)  # the default context rounds
    assert burn.amount(rate, units) == exact
    assert len(exact.as_tuple().digits) == 55


def test_plan_groups_by_account_credit_type_and_metric_in_event_order() -> None:
    calls = metric("count", rate="0.5", code="calls")
    tokens = metric("sum", "t", rate="0.001", code="tokens", credit_type="tok")
    events = [
        Ev("e1", properties={"t": 1000}),
        Ev("e2", account_id="acct_b", properties={"t": 10}),
        Ev("e3", properties={}),
        Ev("e4", event_name="other", properties={"t": 5}),
    ]
    burns = burn.plan([calls, tokens], events)
    got = [(b.account_id, b.credit_type, b.amount, b.reason, b.metadata) for b in burns]
    assert got == [
        (
            "acct_a",
            "units",
            Decimal(1),
            "usage:calls",
            {"metric": "calls", "rate": "0.5", "events": "2", "event_ids": '["e1","e3"]'},
        ),
        (
            "acct_a",
            "tok",
            Decimal(1),
            "usage:tokens",
            {"metric": "tokens", "rate": "0.001", "events": "1", "event_ids": '["e1"]'},
        ),
        (
            "acct_b",
            "units",
            Decimal("0.5"),
            "usage:calls",
            {"metric": "calls", "rate": "0.5", "events": "1", "event_ids": '["e2"]'},
        ),
        (
            "acct_b",
            "tok",
            Decimal("0.01"),
            "usage:tokens",
            {"metric": "tokens", "rate": "0.001", "events": "1", "event_ids": '["e2"]'},
        ),
    ]


def test_plan_splits_a_group_into_entries_of_at_most_chunk_events() -> None:
    events = [Ev(f"e{i}") for i in range(burn.CHUNK * 2 + 1)]
    burns = burn.plan([metric(rate="1")], events)
    assert [b.metadata["events"] for b in burns] == [str(burn.CHUNK), str(burn.CHUNK), "1"]
    ids = [uid for b in burns for uid in json.loads(b.metadata["event_ids"])]
    assert ids == [e.unique_id for e in events]


def test_an_event_whose_burn_rounds_to_zero_is_not_listed() -> None:
    burns = burn.plan(
        [metric("sum", "t", rate="0.5")],
        [Ev("e1", properties={"t": "0.000000000000000001"}), Ev("e2", properties={"t": 1})],
    )
    assert [(b.amount, b.metadata["event_ids"]) for b in burns] == [(Decimal("0.5"), '["e2"]')]
