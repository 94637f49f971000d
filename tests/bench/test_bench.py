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
    assert bench._target(bench.REST_SIDECAR, fine) is None
    assert bench._target("grpc_list_prices", {**fine, "transport": "grpc"}) is None


def test_rest_baseline_is_the_route_to_the_server_and_healthz_only_a_reference() -> None:
    """Issue 18: REST reads are judged against a REST no-op through Envoy to the billing
    server (tests/gateway/test_health_route.py proves the route), not the sidecar's /healthz."""
    assert bench.FIGURES[bench.REST_BASE][1:3] == ("rest", "GET /v1/health")
    assert bench.FIGURES[bench.REST_SIDECAR][1:3] == ("rest", "GET /healthz")


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
    keys = {*bench.BASELINES, "list_prices", "grpc_list_prices", "refused"}
    assert set(figures) == keys
    assert figures[bench.REST_BASE]["ratio_to_baseline"] == 1.0
    assert figures[bench.REST_SIDECAR]["ratio_to_sidecar"] == 1.0
    assert figures[bench.GRPC_BASE]["ratio_to_baseline"] == 1.0
    assert figures["list_prices"]["ratio_to_sidecar"] > 0
    assert figures["grpc_list_prices"]["ratio_to_sidecar"] is None
    for key, f in figures.items():
        assert f["errors"] == 0, (key, f["first_error"])
        assert f["calls"] > 0 and f["calls_per_s"] > 0 and f["ratio_to_baseline"] > 0
        assert f["p50_ms"] is not None and f["p50_ms"] <= f["p99_ms"]
    assert figures["list_prices"]["target"] in ("met", "missed")
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed
    assert "no-op: GET /v1/health (server)" in printed
    assert "reference: GET /healthz (sidecar)" in printed and "x sidecar" in printed
