"""The bench runs end to end and reports well-formed figures. No timing thresholds here."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest

from bench import core as bench

KEYS = {
    "baseline",
    "issue_token_same",
    "issue_token_new",
    "rest_issue_token_same",
    "rest_issue_token_new",
    "list_prices",
    "rest_list_prices",
}


def test_measure_stops_at_max_calls_and_gives_each_call_its_own_index():
    seen: list[int] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        with lock:
            seen.append(i)

    m = bench.measure("k", "label", "grpc", lambda: call, concurrency=3, duration=60, max_calls=50)
    assert m.calls + 3 == len(seen) <= 50  # three untimed warm-up calls, then the bound
    assert len(set(seen)) == len(seen)
    assert m.calls_per_s is not None and m.calls_per_s > 0 and m.errors == 0


def test_measure_counts_failed_calls_apart():
    def call(i: int) -> None:
        if i % 2:
            raise RuntimeError("odd")

    m = bench.measure("k", "label", "grpc", lambda: call, concurrency=2, duration=60, max_calls=40)
    assert m.errors == 20 and m.calls == 19  # indices 0..39; 0 and 1 are the warm-ups
    assert m.first_error == "RuntimeError: odd"


@pytest.mark.envoy
def test_bench_writes_positive_figures_for_every_row(tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    monkeypatch.delenv(bench.PG_ENV, raising=False)
    out = tmp_path / "results.json"
    argv = ["--duration", "0.3", "--concurrency", "4", "--max-calls", "5000", "--out", str(out)]
    assert bench.main(argv) == 0
    doc = json.loads(out.read_text())
    assert dt.datetime.fromisoformat(doc["timestamp"]).tzinfo is not None
    assert doc["machine"]["cpu_count"] >= 1 and doc["machine"]["python"]
    assert doc["settings"]["concurrency"] == 4
    assert list(doc["databases"]) == ["sqlite"]
    figures = doc["databases"]["sqlite"]
    assert set(figures) == KEYS
    assert figures["baseline"]["ratio_to_baseline"] == 1.0
    for key, f in figures.items():
        if f["skipped"]:  # the catalog may not be built yet
            assert key in {"list_prices", "rest_list_prices"}
            continue
        assert f["errors"] == 0, f["first_error"]
        assert f["calls"] > 0 and f["calls_per_s"] > 0 and f["ratio_to_baseline"] > 0
        assert f["p50_ms"] is not None and f["p50_ms"] <= f["p99_ms"]
        if f["transport"] == "rest" and not figures[key.removeprefix("rest_")]["skipped"]:
            assert f["ratio_to_grpc"] > 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "Health/Check" in printed
