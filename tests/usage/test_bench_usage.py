"""bench.usage runs end to end at a tiny size and reports every figure. No timing thresholds."""

from __future__ import annotations

import json

import pytest

from bench import usage as bench_usage

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]


def test_usage_bench_reports_every_figure_with_ratios(pg_base_url, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BILLING_BENCH_POSTGRES_URL", pg_base_url)
    out = tmp_path / "results-usage.json"
    args = [
        "--procs", "2",
        "--events-per-proc", "600",
        "--rest-single-per-proc", "20",
        "--usage-events", "2000",
        "--usage-total", "10000",
        "--out", str(out),
    ]  # fmt: skip
    assert bench_usage.main(args) == 0
    report = json.loads(out.read_text())
    figures = {f["key"]: f for f in report["ingest"]}
    assert set(figures) == {
        "raw_executemany",
        "raw_copy",
        "grpc_batch",
        "grpc_stream",
        "grpc_stream_aio",
        "grpc_stream_go",
        "grpc_stream_x100",
        "rest_single",
        "rest_batch",
        "grpc_batch_burn",
        "grpc_stream_x100_burn",
    }
    for key, f in figures.items():
        assert "error" not in f, (key, f)
        expected = 40 if key == "rest_single" else 1200
        assert f["events"] == expected and f["events_per_s"] > 0, key
        assert f["vs_executemany"] > 0 and f["vs_copy"] > 0
        if key.startswith("grpc_"):  # the server's CPU per event, read from /proc on Linux
            assert f["server_cpu_us_per_event"] > 0, key
    burn = report["burn"]
    assert burn["events"] == 2400 and burn["exact"] and burn["ledger_entries"] > 0
    usage = report["get_usage"]
    assert usage["account_events"] == 2000 and usage["total_events"] == 10000
    assert usage["latency"]["count/month"]["value"] == "2000"
    assert usage["latency"]["sum_tokens_by_model/month"]["groups"] == 4
    assert set(usage["plans_sum_tokens"]) == {"month", "week"}


def test_only_runs_the_named_figures(pg_base_url, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BILLING_BENCH_POSTGRES_URL", pg_base_url)
    monkeypatch.setattr(bench_usage, "ONLY", set())
    out = tmp_path / "results-usage.json"
    args = [
        "--procs", "1",
        "--events-per-proc", "200",
        "--skip-usage",
        "--only", "raw_executemany,grpc_stream",
        "--out", str(out),
    ]  # fmt: skip
    assert bench_usage.main(args) == 0
    figures = {f["key"]: f for f in json.loads(out.read_text())["ingest"]}
    assert set(figures) == {"raw_executemany", "grpc_stream"}
    assert figures["grpc_stream"]["events"] == 200 and "error" not in figures["grpc_stream"]
    assert "burn" not in json.loads(out.read_text())
