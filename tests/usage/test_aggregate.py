"""The rules of every aggregation, without a database (usage.aggregate)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tollbooth.usage import aggregate
from tollbooth.usage.aggregate import Aggregation, Filter, MetricSpec

T = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "value,number",
    [
        (Decimal("1500"), Decimal("1500")),
        (7, Decimal(7)),
        (0.1, Decimal("0.1")),
        ("12.50", Decimal("12.50")),
        ("-3", Decimal(-3)),
        ("1e3", None),
        ("+5", None),
        (" 5", None),
        ("abc", None),
        (True, None),
        (None, None),
        ({"a": 1}, None),
        ("١٢", None),  # Arabic-Indic digits are not [0-9]
    ],
)
def test_what_counts_as_a_number(value, number) -> None:  # type: ignore[no-untyped-def]
    assert aggregate.number_of(value) == number


@pytest.mark.parametrize(
    "value,text",
    [
        ("x", "x"),
        (Decimal("1500"), "1500"),
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("1E+20"), "100000000000000000000"),
        (0.1, "0.1"),
        (True, "true"),
        (False, "false"),
        (None, None),
    ],
)
def test_what_a_value_compares_as(value, text) -> None:  # type: ignore[no-untyped-def]
    assert aggregate.text_of(value) == text


@pytest.mark.parametrize(
    "number,text",
    [
        (Decimal("1512.50"), "1512.5"),
        (Decimal("3.000"), "3"),
        (Decimal("-0.0"), "0"),
        (None, "0"),
        (12, "12"),
        (Decimal("1E+3"), "1000"),
        (Decimal("0.30"), "0.3"),
    ],
)
def test_aggregates_print_as_plain_decimals(number, text) -> None:  # type: ignore[no-untyped-def]
    assert aggregate.decimal_text(number) == text


def test_loads_keeps_numbers_exact() -> None:
    props = aggregate.loads('{"a":0.1,"b":1500,"c":"x"}')
    assert props == {"a": Decimal("0.1"), "b": Decimal(1500), "c": "x"}


def rows(*props: dict, start: dt.datetime = T) -> list[tuple[dt.datetime, str, dict]]:
    return [(start + dt.timedelta(minutes=i), f"u{i:03d}", p) for i, p in enumerate(props)]


def spec(agg: Aggregation, prop: str = "", filters: tuple[Filter, ...] = ()) -> MetricSpec:
    return MetricSpec("m", "e", agg, prop, filters)


DATA = rows(
    {"tokens": Decimal("0.1"), "model": "a", "user": "x"},
    {"tokens": Decimal("0.2"), "model": "b", "user": "y"},
    {"tokens": "10.50", "model": "a", "user": "x"},
    {"tokens": "n/a", "model": "a"},
    {"model": "c", "user": Decimal(5)},
)


@pytest.mark.parametrize(
    "agg,prop,expected",
    [
        (Aggregation.COUNT, "", 5),
        (Aggregation.COUNT_UNIQUE, "user", 3),
        (Aggregation.SUM, "tokens", Decimal("10.80")),
        (Aggregation.MAX, "tokens", Decimal("10.50")),
        (Aggregation.LATEST, "tokens", Decimal("10.50")),  # the later "n/a" is no number
    ],
)
def test_each_aggregation(agg, prop, expected) -> None:  # type: ignore[no-untyped-def]
    assert aggregate.aggregate(spec(agg, prop), DATA).value == expected


def test_sum_of_point_one_and_point_two_is_exactly_point_three() -> None:
    usage = aggregate.aggregate(spec(Aggregation.SUM, "v"), rows({"v": 0.1}, {"v": 0.2}))
    assert aggregate.decimal_text(usage.value) == "0.3"


def test_filters_must_all_match() -> None:
    s = spec(Aggregation.COUNT, filters=(Filter("model", ("a", "b")), Filter("user", ("x",))))
    assert aggregate.aggregate(s, DATA).value == 2


def test_filter_values_compare_as_text() -> None:
    s = spec(Aggregation.COUNT, filters=(Filter("user", ("5",)),))
    assert aggregate.aggregate(s, DATA).value == 1


def test_grouping_puts_events_without_the_property_in_the_empty_group() -> None:
    usage = aggregate.aggregate(spec(Aggregation.COUNT), DATA, group_by="user")
    assert usage.groups == [("", 1), ("5", 1), ("x", 2), ("y", 1)]


def test_grouped_sum_and_latest() -> None:
    usage = aggregate.aggregate(spec(Aggregation.SUM, "tokens"), DATA, group_by="model")
    assert usage.groups == [("a", Decimal("10.60")), ("b", Decimal("0.2")), ("c", Decimal(0))]
    latest = aggregate.aggregate(spec(Aggregation.LATEST, "tokens"), DATA, group_by="model")
    assert latest.groups == [("a", Decimal("10.50")), ("b", Decimal("0.2")), ("c", None)]


def test_latest_ties_go_to_the_greatest_unique_id() -> None:
    data = [(T, "b", {"v": Decimal(2)}), (T, "c", {"v": Decimal(3)}), (T, "a", {"v": Decimal(1)})]
    assert aggregate.aggregate(spec(Aggregation.LATEST, "v"), data).value == Decimal(3)


def test_group_keys_are_cut_and_ordered_by_code_point() -> None:
    long = "z" * 300
    data = rows({"g": long}, {"g": "é"}, {"g": "Z"}, {"g": "a"})
    usage = aggregate.aggregate(spec(Aggregation.COUNT), data, group_by="g")
    assert [k for k, _ in usage.groups] == ["Z", "a", "z" * aggregate.GROUP_KEY_LENGTH, "é"]


def test_no_events_give_zero_or_nothing() -> None:
    for agg in Aggregation:
        usage = aggregate.aggregate(spec(agg, "v"), [])
        assert aggregate.decimal_text(usage.value) == "0"


def test_exact_sum_keeps_every_digit() -> None:
    values = [Decimal("1" + "0" * 40), Decimal("0." + "0" * 39 + "1")]
    assert aggregate.exact_sum(values) == Decimal("1" + "0" * 40 + "." + "0" * 39 + "1")
