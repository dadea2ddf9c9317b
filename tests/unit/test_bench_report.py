"""bench/report.py: a partial run keeps the other benchmarks' results; tables and chart are written."""

from __future__ import annotations

import json

from bench.report import write_reports

PROVISIONING = {"benchmark": "provisioning", "rounds": 1, "results": [
    {"agents": 1, "way": "pulumi up", "median_s": 3.0},
    {"agents": 1, "way": "docker script", "median_s": 1.5},
]}
SCALE = {"benchmark": "scale", "largest_ok": 40, "results": [
    {"agents": 20, "ok": True, "up_s": 20.0, "destroy_s": 5.0},
    {"agents": 40, "ok": True, "up_s": 45.0, "destroy_s": 11.0},
    {"agents": 80, "ok": False, "error": "agent a-77 did not answer"},
]}


def test_a_partial_run_replaces_only_its_own_benchmarks(tmp_path):
    write_reports([PROVISIONING, SCALE], tmp_path)
    newer = {**PROVISIONING, "results": [{**PROVISIONING["results"][0], "median_s": 2.5}, PROVISIONING["results"][1]]}
    write_reports([newer], tmp_path)
    results = json.loads((tmp_path / "report.json").read_text())["results"]
    assert [r["benchmark"] for r in results] == ["provisioning", "scale"]
    assert results[0]["results"][0]["median_s"] == 2.5
    assert results[1]["largest_ok"] == 40


def test_tables_name_every_column_and_the_chart_is_a_png(tmp_path):
    write_reports([PROVISIONING, SCALE], tmp_path)
    table = (tmp_path / "report.md").read_text()
    assert "| agents | ok | up_s | destroy_s | error |" in table  # rows of different shapes share one header
    assert "| 80 | False |  |  | agent a-77 did not answer |" in table
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
