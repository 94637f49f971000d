"""bench.entitlements runs end to end on PostgreSQL and every CheckEntitlement answer it got was
the right one (the load generators count a wrong answer as an error). No timing thresholds."""

from __future__ import annotations

import json
import os

import pytest

from bench import entitlements


@pytest.mark.timeout(600)  # four server processes, each figure waits for its load processes
def test_the_entitlement_bench_reports_every_figure_without_errors(tmp_path):  # type: ignore[no-untyped-def]
    if not os.environ.get("BILLING_TEST_POSTGRES_URL", "").strip():
        pytest.skip("needs BILLING_TEST_POSTGRES_URL")
    out = tmp_path / "results.json"
    argv = ["--duration", "0.5", "--concurrency", "4", "--accounts", "20", "--events", "7"]
    assert entitlements.main([*argv, "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    figures = doc["figures"]
    assert set(figures) == {"baseline", "check_boolean", "check_metered", "check_metered_cached"}
    for key, figure in figures.items():
        assert figure["errors"] == 0, (key, figure["first_error"])
    # Every answer counted was checked by the load generator (allowed, and `used` == 7).
    assert sum(figures[k]["calls"] for k in figures if k != "baseline") > 0
    assert figures["baseline"]["ratio_to_baseline"] is None
    assert set(doc["targets"]) == {"boolean", "metered", "metered_cached"}
