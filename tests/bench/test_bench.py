"""bench.core runs `tollbooth run` end to end with load from separate processes and reports
well-formed figures beside their baselines. No timing thresholds here."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from bench import core as bench


def test_targets_are_judged_on_rest_reads_only() -> None:
    fine = {"transport": "rest", "ratio_to_baseline": 0.6, "p99_ms": 20.0, "errors": 0}
    assert bench._target("list_prices", fine) == "met"
    assert bench._target("list_prices", {**fine, "p99_ms": 26.0}) == "missed"
    assert bench._target("list_prices", {**fine, "ratio_to_baseline": 0.4}) == "missed"
    assert bench._target("list_prices", {**fine, "errors": 1}) == "missed"
    assert bench._target(bench.REST_BASE, fine) is None
    assert bench._target("grpc_list_prices", {**fine, "transport": "grpc"}) is None


@pytest.mark.envoy
@pytest.mark.timeout(300)
def test_bench_writes_positive_figures_for_every_row(tmp_path, capsys):  # type: ignore[no-untyped-def]
    out = tmp_path / "results.json"
    argv = ["--sqlite", "--duration", "0.5", "--concurrency", "4", "--out", str(out)]
    assert bench.main([*argv, "--figures", "list_prices,grpc_list_prices,refused"]) == 0
    doc = json.loads(out.read_text())
    assert dt.datetime.fromisoformat(doc["timestamp"]).tzinfo is not None
    assert doc["machine"]["cpu_count"] >= 1 and doc["settings"]["concurrency"] == 4
    figures = doc["databases"]["sqlite"]
    keys = {bench.REST_BASE, bench.GRPC_BASE, "list_prices", "grpc_list_prices", "refused"}
    assert set(figures) == keys
    assert figures[bench.REST_BASE]["ratio_to_baseline"] == 1.0
    assert figures[bench.GRPC_BASE]["ratio_to_baseline"] == 1.0
    for key, f in figures.items():
        assert f["errors"] == 0, (key, f["first_error"])
        assert f["calls"] > 0 and f["calls_per_s"] > 0 and f["ratio_to_baseline"] > 0
        assert f["p50_ms"] is not None and f["p50_ms"] <= f["p99_ms"]
    assert figures["list_prices"]["target"] in ("met", "missed")
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "GET /healthz" in printed
