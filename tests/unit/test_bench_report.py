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


def test_every_aim_is_listed_met_or_not_with_the_command_that_measures_it(tmp_path):
    from bench import scale
    from bench.common import aim

    rows = [{"agents": 20, "ok": True, "per_agent_s": 0.5, "state_kb_per_agent": 7.5},
            {"agents": 320, "ok": True, "per_agent_s": 0.7, "state_kb_per_agent": 7.9}]
    growth, state = scale.aims(rows, [20, 320])
    assert growth["measured"] == "1.40x" and growth["limit"] == "≤ 1.25x" and not growth["met"]
    assert state["met"] and "--scale-sizes 20,320" in state["command"]
    readiness = {"benchmark": "readiness", "results": [{"phase": "total", "median_s": 0.9}],
                 "aims": [aim("container start to first git", 0.9, 1.0, " s", "python -m bench --only readiness")]}
    write_reports([readiness, {**SCALE, "aims": [growth, state]}], tmp_path)
    table = (tmp_path / "report.md").read_text()
    assert "| container start to first git | 0.90 s | ≤ 1 s | yes |" in table
    assert "| per-agent cost, 320 vs 20 agents | 1.40x | ≤ 1.25x | no | 0.70 s / 0.50 s per agent |" in table
    assert table.index("### aims") < table.index("### readiness")


def test_only_sizes_that_came_up_count_towards_the_aims():
    from bench import scale

    assert scale.aims([{"agents": 20, "ok": False, "error": "x"}], [20]) == []
    (state,) = scale.aims([{"agents": 20, "ok": True, "per_agent_s": 0.5, "state_kb_per_agent": 9.0},
                           {"agents": 40, "ok": False, "error": "x"}], [20, 40])
    assert state["aim"].startswith("state per agent, 20 agents") and not state["met"]
