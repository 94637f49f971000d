"""The console's reads on SQLite and PostgreSQL: account search and the per-day usage series;
and the chart's geometry."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from tollbooth.accounts import repository as accounts
from tollbooth.console import chart, data
from tollbooth.db import Database
from tollbooth.db.models import BillableMetric, UsageEvent
from tollbooth.db.types import utcnow


def _account(db: Database, principal: str, email: str | None) -> str:
    with db.transaction() as session:
        accounts.insert_if_absent(session, principal, email, None)
        found = accounts.by_principal(session, principal)
        assert found is not None
        return found.id


def test_search_by_id_alias_and_any_part_of_the_email(db: Database) -> None:
    ann = _account(db, "ann", "Ann.Smith@Example.com")
    _account(db, "bea", "bea@example.org")
    _account(db, "percent", "100%_off@example.net")
    carol = _account(db, "carol", None)
    with db.transaction(readonly=True) as session:

        def ids(text: str) -> list[str]:
            return [a.principal_id for a in data.search_accounts(session, text)]

        assert ids(ann) == ["ann"]
        assert ids("ann") == ["ann"]
        assert ids("  ann  ") == ["ann"]
        assert ids("SMITH@example") == ["ann"]
        assert sorted(ids("example")) == ["ann", "bea", "percent"]
        # LIKE's wildcards are plain characters here.
        assert ids("%") == ["percent"]
        assert ids("_") == ["percent"]
        assert ids("carol") == ids(carol) == ["carol"]
        assert ids("car") == ids(carol[:-1]) == []  # an alias or id matches whole
        assert sorted(ids("")) == ["ann", "bea", "carol", "percent"]


def test_usage_series_is_per_utc_day_by_the_metric_rules(db: Database) -> None:
    account = _account(db, "user-1", None)
    other = _account(db, "user-2", None)
    today = dt.date(2026, 3, 10)
    with db.transaction() as session:
        session.add(
            BillableMetric(
                code="tokens",
                name="Tokens",
                event_name="llm",
                aggregation="sum",
                property="tokens",
                filters=[],
            )
        )
        rows = [
            (account, dt.datetime(2026, 3, 8, 23, 59, 59, tzinfo=dt.UTC), "1.25"),
            (account, dt.datetime(2026, 3, 8, 0, 0, 0, tzinfo=dt.UTC), "2"),
            (account, dt.datetime(2026, 3, 9, 0, 0, 0, tzinfo=dt.UTC), "0.75"),
            (account, dt.datetime(2026, 2, 8, 12, 0, 0, tzinfo=dt.UTC), "9"),  # before the window
            (account, dt.datetime(2026, 3, 11, 0, 0, 0, tzinfo=dt.UTC), "9"),  # after today
            (other, dt.datetime(2026, 3, 9, 12, 0, 0, tzinfo=dt.UTC), "5"),  # someone else's
        ]
        for i, (who, at, tokens) in enumerate(rows):
            session.add(
                UsageEvent(
                    unique_id=f"u{i}",
                    billing_account_id=who,
                    event_name="llm",
                    occurred_at=at,
                    properties={"tokens": tokens},
                    received_at=utcnow(),
                )
            )
    with db.transaction(readonly=True) as session:
        [series] = data.usage_series(session, account, today)
    assert series.code == "tokens" and len(series.days) == data.USAGE_DAYS
    assert series.days[0][0] == today - dt.timedelta(days=data.USAGE_DAYS - 1)
    assert series.days[-1][0] == today
    present = {day.isoformat(): value for day, value in series.days if value is not None}
    assert present == {"2026-03-08": Decimal("3.25"), "2026-03-09": Decimal("0.75")}


def test_chart_bars_scale_exactly_and_never_hide_a_small_value() -> None:
    start = dt.date(2026, 1, 1)
    points = [
        (start, Decimal("1000")),
        (start + dt.timedelta(days=1), None),
        (start + dt.timedelta(days=2), Decimal("0.001")),
        (start + dt.timedelta(days=3), Decimal("500")),
    ]
    c = chart.bars(points)
    tallest = chart.HEIGHT - chart.BOTTOM - 4
    assert [b.height for b in c.bars] == [tallest, 0, 1, tallest // 2]
    assert [b.y + b.height for b in c.bars] == [c.plot_bottom] * 4
    assert [b.value for b in c.bars] == ["1000", "-", "0.001", "500"]
    assert c.maximum == "1000"
    assert chart.bars([(start, None)]).bars[0].height == 0


def test_a_huge_peak_is_written_short_on_the_scale_and_whole_in_the_heading() -> None:
    """A sum of doubles near 1e308 is a 309-digit figure: whole, the scale's label (right
    aligned in the 48 px left of the plot) was cut to its last digits ("0000005"), a figure
    that misleads. The scale shows it short; the heading (`maximum`) keeps it exact."""
    start = dt.date(2026, 1, 1)
    huge = Decimal("2e308") + 5
    c = chart.bars([(start, huge), (start + dt.timedelta(days=1), Decimal("1"))])
    assert c.maximum == str(huge)
    assert c.scale == "2e+308"
    assert len(c.scale) <= 7
    assert chart.bars([(start, Decimal("1000"))]).scale == "1000"
    assert chart.bars([(start, Decimal("0.001"))]).scale == "0.001"
    assert chart.bars([(start, Decimal("12345678"))]).scale == "1.2e+7"
    assert chart.bars([(start, None)]).scale == "0"


def test_a_nul_character_names_nothing_on_either_database(db: Database) -> None:
    """What the console's query string and paths carry reaches these reads as typed: a NUL
    (`?q=%00`, `/accounts/%00`), which PostgreSQL cannot hold in text, finds nothing and
    raises nothing (the pages then answer 200 with no match, 404 NOT_FOUND)."""
    from tollbooth import errors
    from tollbooth.console import inbox

    _account(db, "nul-probe", "nul@example.com")
    with db.transaction(readonly=True) as session:
        assert data.search_accounts(session, "nul\x00") == []
        assert data.account_view(session, "acct_\x00", dt.date(2026, 3, 10)) is None
        assert inbox.event_status(session, "evt_\x00") is None
    with db.transaction() as session:
        try:
            inbox.resend(session, "nep_\x00", "ntf_\x00", utcnow())
        except errors.DomainError as exc:
            assert exc.kind is errors.Kind.NOT_FOUND, exc
        else:
            raise AssertionError("a resend naming nothing was accepted")


def test_a_resend_from_a_stale_page_is_refused_and_changes_nothing(db: Database) -> None:
    """The console's Resend carries the delivery's version as its page showed it: the first
    resend from that page goes through, the same form again (a second tab) is refused with
    NOTIFICATION_CHANGED and leaves the delivery as the first left it."""
    import pytest

    from tests.notifications.support import enqueue
    from tollbooth import errors
    from tollbooth.console import inbox
    from tollbooth.db.models import NotificationDelivery
    from tollbooth.notifications import endpoints
    from tollbooth.notifications import repository as notifications

    with db.transaction() as session:
        endpoint, _ = endpoints.create(
            session, endpoints.Fields(url="https://receiver.example/hook"), utcnow()
        )
    nid = enqueue(db, "credits.granted", None, {"amount": "1"})
    with db.transaction() as session:
        rows = [r for r in notifications.assign_positions(session, 100) if r.id == nid]
        assert notifications.insert_deliveries(session, endpoint.id, rows, utcnow()) == 1
        delivery = notifications.get_delivery(session, endpoint.id, nid)
        assert delivery is not None
        delivery.state, delivery.attempts = "delivered", 1
        delivery.updated_at = utcnow() - dt.timedelta(minutes=5)
    with db.transaction(readonly=True) as session:
        page = inbox.deliveries(session).items
        shown = next(d for ep in page if ep.id == endpoint.id for d in ep.deliveries)
    assert shown.state == "delivered" and shown.version

    with db.transaction() as session:
        assert inbox.resend(session, endpoint.id, nid, utcnow(), shown.version) == "pending"
    with db.transaction() as session:
        row = session.query(NotificationDelivery).filter_by(endpoint_id=endpoint.id).one()
        row.state = "delivered"  # the delivery process sent it again
        after_first = (row.state, row.updated_at)
    with pytest.raises(errors.DomainError) as refused, db.transaction() as session:
        inbox.resend(session, endpoint.id, nid, utcnow(), shown.version)
    assert refused.value.reason == "NOTIFICATION_CHANGED"
    with db.transaction(readonly=True) as session:
        row = session.query(NotificationDelivery).filter_by(endpoint_id=endpoint.id).one()
        assert (row.state, row.updated_at) == after_first


def test_a_console_resend_of_a_message_the_endpoint_never_had_is_refused(db: Database) -> None:
    """The console's Resend names a delivery its page showed (with its version): a form naming
    a message the endpoint has no delivery of (hand-made; the page never lists one) is
    refused with NOTIFICATION_CHANGED and creates no delivery."""
    import pytest

    from tests.notifications.support import enqueue
    from tollbooth import errors
    from tollbooth.console import inbox
    from tollbooth.db.models import NotificationDelivery
    from tollbooth.notifications import endpoints
    from tollbooth.notifications import repository as notifications

    with db.transaction() as session:
        endpoint, _ = endpoints.create(
            session, endpoints.Fields(url="https://receiver.example/hook"), utcnow()
        )
    nid = enqueue(db, "credits.granted", None, {"amount": "1"})
    with db.transaction() as session:  # queued (it has its place), but not for this endpoint
        assert nid in [r.id for r in notifications.assign_positions(session, 100)]
    with pytest.raises(errors.DomainError) as refused, db.transaction() as session:
        inbox.resend(session, endpoint.id, nid, utcnow(), "2026-01-01T00:00:00+00:00")
    assert refused.value.reason == "NOTIFICATION_CHANGED"
    with db.transaction(readonly=True) as session:
        assert session.query(NotificationDelivery).filter_by(endpoint_id=endpoint.id).count() == 0


def test_a_replay_from_a_stale_page_is_refused_and_changes_nothing(db: Database) -> None:
    """The console's Replay carries the event's version as its page showed it: the first replay
    from that page goes through (here it fails again: one more attempt), the same form again (a
    second tab, still showing `failed`) is refused with EVENT_CHANGED and neither applies the
    event again nor counts another attempt. Without a version (`webhooks replay`) it replays."""
    import json

    import pytest

    from tollbooth import errors
    from tollbooth.console import inbox
    from tollbooth.db.models import StripeEvent
    from tollbooth.webhooks.dispatch import Handler, Registry
    from tollbooth.webhooks.service import Inbox, store

    calls: list[str] = []

    def apply(session: object, event_id: str, obj: object, facts: object) -> list[str]:
        calls.append(event_id)
        if len(calls) == 1:
            raise RuntimeError("the provider is down")
        return ["done"]

    registry = Registry()
    registry.register("test.thing", Handler(read=lambda obj: None, apply=apply))
    box = Inbox(db, registry)
    body = {"id": "evt_stale_tab", "type": "test.thing", "data": {"object": {"id": "x"}}}
    with db.transaction() as session:
        store(session, json.dumps(body).encode())
        row = session.get(StripeEvent, "evt_stale_tab")
        assert row is not None
        row.status, row.attempts, row.next_attempt_at = "failed", 12, None
    with db.transaction(readonly=True) as session:
        shown = next(
            e for e in inbox.events(session, "failed").items if e.event_id == "evt_stale_tab"
        )
    assert shown.version

    first = box.replay("evt_stale_tab", seen=shown.version)
    assert (first.status, calls) == ("failed", ["evt_stale_tab"])

    def state() -> tuple[str, int, str | None]:
        with db.transaction(readonly=True) as session:
            row = session.get(StripeEvent, "evt_stale_tab")
            assert row is not None
            return row.status, row.attempts, row.last_error

    after_first = state()
    assert after_first[:2] == ("failed", 1)
    with pytest.raises(errors.DomainError) as refused:
        box.replay("evt_stale_tab", seen=shown.version)
    assert refused.value.reason == "EVENT_CHANGED"
    assert refused.value.kind is errors.Kind.FAILED_PRECONDITION
    assert calls == ["evt_stale_tab"]
    assert state() == after_first
    # A page shown now carries the new version: that replay goes through, once.
    with db.transaction(readonly=True) as session:
        fresh = next(
            e for e in inbox.events(session, "failed").items if e.event_id == "evt_stale_tab"
        )
    assert box.replay("evt_stale_tab", seen=fresh.version).status == "applied"
    assert len(calls) == 2
    # The command line's replay names no version: it replays whatever the status.
    assert box.replay("evt_stale_tab").status == "applied"
    assert len(calls) == 3


def test_account_view_applies_an_expiry_that_is_due_like_get_balance(db: Database) -> None:
    """A grant whose expiry has passed but is not yet recorded (the next write to the balance
    records it): GetBalance applies it; the console's figure must be the same, not the stored
    row's (it showed the expired credits as still there)."""
    from tollbooth.auth.caller import SERVICE
    from tollbooth.credit import grants, queries

    account = _account(db, "exp-1", None)
    granted_at = utcnow()
    expire_at = granted_at + dt.timedelta(hours=1)
    for amount, expiry in (("10", expire_at), ("2.5", None)):
        with db.transaction() as session:
            grants.grant(
                session,
                SERVICE,
                account,
                credit_type="units",
                amount=amount,
                reason="",
                priority=0,
                expire_at=expiry,
                request_id=f"g-{amount}",
                metadata={},
                clock=lambda: granted_at,
            )
    later = expire_at + dt.timedelta(minutes=1)
    with db.transaction(readonly=True) as session:
        before = data.account_view(session, account, granted_at.date(), now=granted_at)
        after = data.account_view(session, account, later.date(), now=later)
        expected = queries.balance(session, SERVICE, account, "units", later)
    assert before is not None and after is not None
    assert [(f.credit_type, f.balance) for f in before.figures] == [("units", Decimal("12.5"))]
    assert [(f.credit_type, f.balance, f.reserved) for f in after.figures] == [
        ("units", expected.balance, expected.reserved)
    ]
    assert expected.balance == Decimal("2.5")
    assert [f.expiry_due for f in before.figures] == [False]
    assert [f.expiry_due for f in after.figures] == [True]


def _metric(code: str, aggregation: str, prop: str = "", filters: list | None = None) -> Any:
    return BillableMetric(
        code=code,
        name=code.title(),
        event_name="call",
        aggregation=aggregation,
        property=prop,
        filters=filters or [],
    )


# (code, aggregation, property, filters): every aggregation, and filters a day can miss.
CHART_METRICS = [
    ("calls", "count", "", []),
    ("users", "count_unique", "user", []),
    ("tokens", "sum", "tokens", []),
    ("peak", "max", "tokens", []),
    ("last", "latest", "tokens", []),
    ("pro_tokens", "sum", "tokens", [{"property": "tier", "values": ["pro"]}]),
    ("pro_calls", "count", "", [{"property": "tier", "values": ["pro"]}]),
]


def _events(account: str, days: list[dt.date], per_day: int, tag: str) -> list[UsageEvent]:
    """`per_day` events on each day, their values cycling through exact decimals, a number,
    text that is no number, and two tiers (the last day has only `free` events)."""
    values: list[object] = ["1.10", "2.205", 7, "abc", "-0.5", "1000000000000000000000.01"]
    out = []
    for d_index, day in enumerate(days):
        for i in range(per_day):
            at = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(
                seconds=(i * 7919) % 86400
            )
            tier = "free" if day == days[-1] or i % 2 else "pro"
            out.append(
                UsageEvent(
                    unique_id=f"{tag}-{d_index}-{i:05d}",
                    billing_account_id=account,
                    event_name="call",
                    occurred_at=at,
                    properties={
                        "tokens": values[i % len(values)],
                        "user": f"u{i % 3}",
                        "tier": tier,
                    },
                    received_at=utcnow(),
                )
            )
    return out


def _as_before(
    events: list[UsageEvent], today: dt.date
) -> dict[str, dict[dt.date, Decimal | int | None]]:
    """What the page showed before it aggregated in SQL: each day's events streamed through
    `usage.aggregate` in Python (the rules GetUsage holds both databases to)."""
    from tollbooth.usage import aggregate
    from tollbooth.usage.service import spec_of

    first = today - dt.timedelta(days=data.USAGE_DAYS - 1)
    out: dict[str, dict[dt.date, Decimal | int | None]] = {}
    for code, agg, prop, filters in CHART_METRICS:
        spec = spec_of(_metric(code, agg, prop, filters))
        per_day: dict[dt.date, list[Any]] = {}
        for e in events:
            day = e.occurred_at.astimezone(dt.UTC).date()
            if first <= day <= today:
                props = aggregate.loads(json.dumps(e.properties))
                per_day.setdefault(day, []).append((e.occurred_at, e.unique_id, props))
        out[code] = {d: aggregate.aggregate(spec, rows).value for d, rows in per_day.items()}
    return out


def _series_and_rows(
    db: Database, account: str, today: dt.date
) -> tuple[dict[str, dict[dt.date, Decimal | int | None]], int]:
    """The page's usage series, and how many rows its statements fetched: every SELECT it ran
    is caught on the way to the driver and run again on the same connection to count them."""
    from sqlalchemy import event

    caught: list[tuple[str, Any]] = []

    def catch(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            caught.append((statement, parameters))

    with db.transaction(readonly=True) as session:
        conn = session.connection()
        event.listen(db.engine, "before_cursor_execute", catch)
        try:
            series = data.usage_series(session, account, today)
        finally:
            event.remove(db.engine, "before_cursor_execute", catch)
        rows = sum(len(conn.exec_driver_sql(s, p).fetchall()) for s, p in caught)
    shown = {s.code: {d: v for d, v in s.days if v is not None} for s in series}
    return shown, rows


def _present(
    series: dict[str, dict[dt.date, Decimal | int | None]],
) -> dict[str, dict[dt.date, Decimal | int | None]]:
    """The days with a figure (the chart shows "-" for none)."""
    return {c: {d: v for d, v in days.items() if v is not None} for c, days in series.items()}


def test_usage_series_is_aggregated_in_the_database_as_before_in_rows_per_day(
    db: Database,
) -> None:
    """The chart's figures are those of aggregating each day's events in Python (what the
    page did, loading 30 days of events), for every aggregation, exact; and the rows fetched
    are per day and metric: ten times the events fetch the same number of rows."""
    account = _account(db, "chart-rows", None)
    today = dt.date(2026, 3, 10)
    days = [today - dt.timedelta(days=n) for n in (0, 1, 5, 29)]
    few = _events(account, days, 6, "a")
    outside = _events(
        account, [today - dt.timedelta(days=30), today + dt.timedelta(days=1)], 3, "o"
    )
    with db.transaction() as session:
        for code, agg, prop, filters in CHART_METRICS:
            session.add(_metric(code, agg, prop, filters))
        session.add_all(few + outside)
    shown, rows_few = _series_and_rows(db, account, today)
    expected = _as_before(few + outside, today)
    assert _present(expected) == shown
    # Hand-computed: a day's six events carry 1.10, 2.205, 7, abc, -0.5, 1e21+0.01.
    one_day = Decimal("1.10") + Decimal("2.205") + 7 - Decimal("0.5")
    assert shown["tokens"][today] == one_day + Decimal("1000000000000000000000.01")
    assert shown["calls"][today] == 6 and shown["users"][today] == 3
    assert shown["peak"][today] == Decimal("1000000000000000000000.01")
    # The last day's events are all `free`: the filtered metrics count none of them (0).
    assert shown["pro_calls"][days[-1]] == 0 and shown["pro_tokens"][days[-1]] == 0
    assert shown["pro_calls"][today] == 3  # events 0, 2, 4: 1.10, 7, -0.5
    assert shown["pro_tokens"][today] == Decimal("1.10") + 7 - Decimal("0.5")
    assert rows_few <= len(CHART_METRICS) * (len(days) + 1)

    many = _events(account, days, 60, "b")
    with db.transaction() as session:
        session.add_all(many)
    shown, rows_many = _series_and_rows(db, account, today)
    expected = _as_before(few + outside + many, today)
    assert _present(expected) == shown
    assert rows_many == rows_few
