"""The credit burn of metrics through the real server, on SQLite and PostgreSQL.

A metric with a credit burn takes `rate x units` per accepted event through the credit ledger,
in the ingest transaction; duplicates never burn; what the balance lacks is overage.
"""

from __future__ import annotations

import json
from decimal import Decimal

import grpc
import pytest
from google.protobuf import field_mask_pb2

from billing.v1 import credit_pb2, usage_pb2
from tests.conftest import SERVICE_MD
from tests.credit.support import check_invariants_at, debit, grant, reserve
from tests.credit.support import stub as credit_stub
from tests.helpers import error_reason
from tests.usage.burn_support import (
    Db,
    balance,
    burn_entries,
    burned_event_ids,
    burning_metric,
    ledger,
    overage_entries,
)
from tests.usage.support import ACCEPTED, DUPLICATE, account, event, ingest, usage_stub

SUM = usage_pb2.AGGREGATION_SUM


@pytest.fixture
def dbr(database_url: str):  # type: ignore[no-untyped-def]
    reader = Db(database_url)
    yield reader
    reader.close()


def test_count_metric_burns_its_rate_once_per_event(channel) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "burn-count")
    grant(channel, acct, "10")
    burning_metric(channel, "calls", "0.5")
    results = ingest(channel, [event(f"c-{i}", acct) for i in range(3)])
    assert [r.status for r in results] == [ACCEPTED] * 3
    assert balance(channel, acct) == ("8.5", "0")
    (entry,) = burn_entries(ledger(channel, acct))
    assert entry.kind == credit_pb2.LEDGER_ENTRY_KIND_DEBIT
    assert (entry.amount, entry.balance_after, entry.reason) == ("-1.5", "8.5", "usage:calls")
    assert json.loads(entry.metadata["event_ids"]) == ["c-0", "c-1", "c-2"]
    assert (entry.metadata["metric"], entry.metadata["rate"]) == ("calls", "0.5")
    assert (entry.metadata["events"], entry.metadata["burn"], entry.metadata["overage"]) == (
        "3",
        "1.5",
        "0",
    )


def test_sum_metric_burns_rate_times_each_positive_number(channel) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "burn-sum")
    grant(channel, acct, "1000")
    burning_metric(channel, "tokens", "0.001", aggregation=SUM, prop="tokens")
    values = [1500, "12.5", 0.1, -3, "abc", None, 0, "0.000000000000001"]
    ingest(
        channel,
        [
            event(f"s-{i}", acct, properties={"tokens": v} if v is not None else {"x": 1})
            for i, v in enumerate(values)
        ],
    )
    # 1.5 + 0.0125 + 0.0001 + 0.000000000000000001; -3, "abc", missing and 0 burn nothing.
    assert balance(channel, acct) == ("998.487399999999999999", "0")
    (entry,) = burn_entries(ledger(channel, acct))
    assert json.loads(entry.metadata["event_ids"]) == ["s-0", "s-1", "s-2", "s-7"]


def test_only_events_the_metric_counts_burn(channel) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "burn-filter")
    grant(channel, acct, "100")
    burning_metric(channel, "large_calls", "2", filters={"model": ["large", "xl"]})
    ingest(
        channel,
        [
            event("f-1", acct, properties={"model": "large"}),
            event("f-2", acct, properties={"model": "small"}),
            event("f-3", acct, properties={}),
            event("f-4", acct, name="other_event", properties={"model": "xl"}),
            event("f-5", acct, properties={"model": "xl"}),
        ],
    )
    assert balance(channel, acct) == ("96", "0")
    assert set(burned_event_ids(ledger(channel, acct))) == {"f-1", "f-5"}


def test_duplicates_never_burn(channel, dbr, database_url) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "burn-dup")
    grant(channel, acct, "100")
    burning_metric(channel, "calls", "1")
    batch = [event("d-1", acct), event("d-2", acct), event("d-1", acct)]
    anonymous = event("", acct, properties={"n": 1})  # derived id: the same content counts once
    first = ingest(channel, [*batch, anonymous])
    again = ingest(channel, [*batch, anonymous])
    single = usage_stub(channel).IngestEvent(
        usage_pb2.IngestEventRequest(event=event("d-2", acct)), metadata=SERVICE_MD, timeout=10
    )
    assert [r.status for r in first] == [ACCEPTED, ACCEPTED, DUPLICATE, ACCEPTED]
    assert [r.status for r in again] == [DUPLICATE] * 4
    assert single.status == DUPLICATE
    assert balance(channel, acct) == ("97", "0")
    assert set(burned_event_ids(ledger(channel, acct)).values()) == {1}
    check_invariants_at(database_url)


def test_burn_beyond_the_balance_takes_what_is_there_and_records_overage(channel, dbr) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "burn-over")
    grant(channel, acct, "1")
    burning_metric(channel, "calls", "0.75")
    ingest(channel, [event("o-1", acct), event("o-2", acct)])  # 1.5 asked, 1 there
    assert balance(channel, acct) == ("0", "0.5")
    (entry,) = burn_entries(ledger(channel, acct))
    assert (entry.amount, entry.metadata["burn"], entry.metadata["overage"]) == ("-1", "1.5", "0.5")
    ingest(channel, [event("o-3", acct)])  # nothing left: all overage, no DEBIT entry
    assert balance(channel, acct) == ("0", "1.25")
    assert len(burn_entries(ledger(channel, acct))) == 1
    # Every uncovered part has its OVERAGE entry (issue 14, finding 8), oldest first.
    assert [
        (e.amount, e.overage, e.balance_after, json.loads(e.metadata["event_ids"]))
        for e in overage_entries(ledger(channel, acct))
    ] == [("0", "0.5", "0", ["o-1", "o-2"]), ("0", "0.75", "0", ["o-3"])]
    (note,) = dbr.depletions(acct)
    assert (note["credit_type"], note["cause"]) == ("units", "debit")
    assert note["debit_id"] == entry.debit_id


def test_usage_is_accepted_without_any_credits_and_counts_as_overage(channel, dbr) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "burn-none")
    burning_metric(channel, "calls", "3")
    results = ingest(channel, [event("n-1", acct), event("n-2", acct)])
    assert [r.status for r in results] == [ACCEPTED, ACCEPTED]
    assert balance(channel, acct) == ("0", "6")
    assert burn_entries(ledger(channel, acct)) == []
    (over,) = overage_entries(ledger(channel, acct))
    assert (over.amount, over.overage, over.reason) == ("0", "6", "usage:calls")
    assert dbr.depletions(acct) == []  # nothing was there to deplete


def test_a_later_grant_pays_overage_back_first_then_burns_again(channel, dbr, database_url) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "burn-regrant")
    grant(channel, acct, "1")
    burning_metric(channel, "calls", "2")
    ingest(channel, [event("g-1", acct)])
    assert balance(channel, acct) == ("0", "1")
    g = grant(channel, acct, "5")  # 1 of it pays the overage back
    assert balance(channel, acct) == ("4", "0")
    paid = ledger(channel, acct)[-1]
    assert (paid.kind, paid.amount, paid.overage, paid.balance_after, paid.grant_id) == (
        credit_pb2.LEDGER_ENTRY_KIND_OVERAGE_PAID,
        "-1",
        "-1",
        "4",
        g.grant_id,
    )
    ingest(channel, [event("g-2", acct)])
    assert balance(channel, acct) == ("2", "0")
    ingest(channel, [event("g-3", acct), event("g-4", acct)])  # 4 asked, 2 there
    assert balance(channel, acct) == ("0", "2")
    assert len(dbr.depletions(acct)) == 2  # the grant re-armed it
    check_invariants_at(database_url)


def test_every_path_of_ingest_burns(channel) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "burn-paths")
    grant(channel, acct, "100")
    burning_metric(channel, "calls", "1")
    stub = usage_stub(channel)
    stub.IngestEvent(
        usage_pb2.IngestEventRequest(event=event("p-1", acct)), metadata=SERVICE_MD, timeout=10
    )
    ingest(channel, [event("p-2", acct), event("p-3", acct)])
    stream = stub.StreamEvents(
        iter(
            [
                usage_pb2.StreamEventsRequest(event=event("p-4", acct)),
                usage_pb2.StreamEventsRequest(events=[event("p-5", acct), event("p-1", acct)]),
            ]
        ),
        metadata=SERVICE_MD,
        timeout=30,
    )
    acked = {r.unique_id: r.status for resp in stream for r in resp.results}
    assert acked == {"p-4": ACCEPTED, "p-5": ACCEPTED, "p-1": DUPLICATE}
    assert balance(channel, acct) == ("95", "0")
    assert sorted(burned_event_ids(ledger(channel, acct))) == [f"p-{i}" for i in range(1, 6)]


def test_a_large_batch_burns_in_entries_of_at_most_100_events(channel) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "burn-chunks")
    grant(channel, acct, "1000")
    burning_metric(channel, "calls", "0.01")
    ingest(channel, [event(f"k-{i:03d}", acct) for i in range(250)])
    entries = burn_entries(ledger(channel, acct))
    assert [e.metadata["events"] for e in entries] == ["100", "100", "50"]
    assert [e.amount for e in entries] == ["-1", "-1", "-0.5"]
    assert burned_event_ids(entries) == {f"k-{i:03d}": 1 for i in range(250)}
    assert balance(channel, acct) == ("997.5", "0")


def test_one_batch_burns_every_account_and_metric_it_touches(channel, dbr, database_url) -> None:  # type: ignore[no-untyped-def]
    accts = [account(channel, f"burn-many-{i}") for i in range(4)]
    for a in accts[:3]:
        grant(channel, a, "10")
        grant(channel, a, "10", credit_type="tokens")
    burning_metric(channel, "calls", "1")
    burning_metric(channel, "calls_again", "0.5")  # two metrics, one credit type
    burning_metric(channel, "tok", "0.01", aggregation=SUM, prop="t", credit_type="tokens")
    events = [event(f"m-{i}", accts[i % 4], properties={"t": 100 * (i + 1)}) for i in range(12)]
    ingest(channel, events[::-1])
    for i, a in enumerate(accts[:3]):
        mine = [e for j, e in enumerate(events) if j % 4 == i]
        tokens = sum(Decimal(int(e.properties["t"])) for e in mine) / 100
        assert balance(channel, a) == ("5.5", "0")  # 3 events x (1 + 0.5)
        assert balance(channel, a, "tokens") == (str(max(10 - tokens, 0)), str(max(tokens - 10, 0)))
    assert balance(channel, accts[3]) == ("0", "4.5")
    assert balance(channel, accts[3], "tokens") == ("0", "24")  # 400 + 800 + 1200 at 0.01 each
    check_invariants_at(database_url)


def test_burns_keep_the_invariants_beside_debits_and_holds(channel, dbr, database_url) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "burn-mix")
    grant(channel, acct, "5", priority=1)
    grant(channel, acct, "3", priority=0)
    burning_metric(channel, "calls", "1.25")
    reserve(channel, acct, "2")
    ingest(channel, [event("x-1", acct), event("x-2", acct)])
    debit(channel, acct, "1")
    ingest(channel, [event("x-3", acct), event("x-4", acct)])
    assert balance(channel, acct) == ("0", "0")  # 8 - 2 held - 2.5 - 1 - 2.5
    ingest(channel, [event("x-5", acct)])
    assert balance(channel, acct) == ("0", "1.25")
    first = min(dbr.burn_rows(), key=lambda e: e.seq)
    assert [a["amount"] for a in first.allocations] == ["1", "1.5"]  # priority 0 first
    balances = check_invariants_at(database_url)
    assert list(balances.values()) == [Decimal(0)]


def test_metric_with_a_burn_must_count_or_sum(channel) -> None:  # type: ignore[no-untyped-def]
    stub = usage_stub(channel)
    for agg, prop in [
        (usage_pb2.AGGREGATION_MAX, "t"),
        (usage_pb2.AGGREGATION_LATEST, "t"),
        (usage_pb2.AGGREGATION_COUNT_UNIQUE, "user"),
    ]:
        with pytest.raises(grpc.RpcError) as exc:
            burning_metric(channel, "bad", "1", aggregation=agg, prop=prop)
        assert (exc.value.code(), error_reason(exc.value)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
        )
        assert "credit_burn" in (exc.value.details() or "")
    with pytest.raises(grpc.RpcError) as exc:
        burning_metric(channel, "bad", "1", credit_type="no spaces")
    assert error_reason(exc.value) == "FIELD_INVALID"
    burning_metric(channel, "good", "1", aggregation=SUM, prop="t")
    with pytest.raises(grpc.RpcError) as exc:
        stub.UpdateMetric(
            usage_pb2.UpdateMetricRequest(
                metric=usage_pb2.Metric(code="good", aggregation=usage_pb2.AGGREGATION_MAX),
                update_mask=field_mask_pb2.FieldMask(paths=["aggregation"]),
                request_id="burn-update-1",
            ),
            metadata=SERVICE_MD,
            timeout=10,
        )
    assert error_reason(exc.value) == "FIELD_INVALID"


def test_a_metric_without_a_burn_changes_no_balance(channel, dbr) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "burn-off")
    grant(channel, acct, "10")
    burning_metric(channel, "calls", "1")
    stub = usage_stub(channel)
    stub.UpdateMetric(
        usage_pb2.UpdateMetricRequest(
            metric=usage_pb2.Metric(code="calls"),
            update_mask=field_mask_pb2.FieldMask(paths=["credit_burn"]),
            request_id="burn-update-2",
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )
    ingest(channel, [event("off-1", acct)])
    assert balance(channel, acct) == ("10", "0")
    assert dbr.balances()[(acct, "units")] == (Decimal(10), Decimal(0))


def test_balance_of_another_type_shows_zero_overage(channel) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "burn-zero")
    got = credit_stub(channel).GetBalance(
        credit_pb2.GetBalanceRequest(account=acct, type="never"), metadata=SERVICE_MD, timeout=10
    )
    assert (got.balance, got.overage) == ("0", "0")
