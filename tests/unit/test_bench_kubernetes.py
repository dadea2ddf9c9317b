"""bench/kubernetes.py's pure parts: the CPU split, the milestones read from a recorded `kubectl
get`, and the rows with their ratios to Docker, as the report shows them."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path

import pytest

from bench.kubernetes import cpus_each, millicpus, rows, timeline
from bench.report import write_reports

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "kubernetes" / "two-agents.json").read_text())
NAMESPACE = "kdiag-084f"
UP_STARTED = datetime.fromisoformat("2026-11-30T02:11:55Z").timestamp()


def test_cpu_quantities_in_millicores():
    assert [millicpus(q) for q in ("2", "1950m", "0.5")] == [2000, 1950, 500]


def test_the_node_is_split_evenly_and_no_agent_gets_more_than_one_cpu():
    assert [cpus_each(2000, size) for size in (1, 2, 5, 20)] == [1.0, 1.0, 0.4, 0.1]
    assert cpus_each(1950, 20) == 0.097  # 20 of them still fit: requests equal limits
    assert 20 * cpus_each(1950, 20) * 1000 <= 1950
    # With a policy sidecar of 10m in each pod, 5 pods of 0.39 CPU and their sidecars still fit.
    assert cpus_each(2000, 5, 10) == 0.39


def test_milestones_are_the_last_pod_and_deployment_to_reach_them():
    assert timeline(RECORDED, NAMESPACE, UP_STARTED) == {
        "namespace_s": 1.0, "created_s": 2.0, "scheduled_s": 3.0, "started_s": 3.0, "ready_s": 5.0, "rollout_s": 5.0}
    later = copy.deepcopy(RECORDED)
    pod = next(item for item in later["items"] if item["kind"] == "Pod")
    next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")["lastTransitionTime"] = "2026-11-30T02:12:09Z"
    assert timeline(later, NAMESPACE, UP_STARTED)["ready_s"] == 14.0


def test_a_namespace_without_pods_is_an_error_naming_it():
    empty = {"items": [item for item in RECORDED["items"] if item["kind"] == "Namespace"]}
    with pytest.raises(ValueError, match=f"namespace {NAMESPACE} has 0 pods and 0 deployments"):
        timeline(empty, NAMESPACE, UP_STARTED)


def sample(total_s: float, destroy_s: float, **phases: float) -> dict[str, float]:
    return {"seconds": total_s, "up_s": total_s - 0.5, "destroy_s": destroy_s, **phases}


PHASES = {"namespace_s": 1.0, "created_s": 2.0, "scheduled_s": 3.0, "started_s": 3.0, "ready_s": 5.0, "rollout_s": 5.0}
SAMPLES = {
    (1, "docker"): [sample(2.0, 1.0), sample(3.0, 1.5)],
    (1, "kubernetes"): [sample(12.0, 7.0, **PHASES), sample(13.0, 8.0, **{**PHASES, "ready_s": 6.0})],
}


def test_rows_give_medians_and_ratios_to_docker_and_kubernetes_milestones():
    docker, kube = rows(SAMPLES, [1], {1: 1.0})
    assert docker == {"agents": 1, "way": "docker", "cpus_each": 1.0, "median_s": 2.5, "min_s": 2.0, "max_s": 3.0,
                      "vs_docker": 1.0, "up_s": 2.0, "destroy_s": 1.25, "destroy_vs_docker": 1.0}
    assert (kube["median_s"], kube["vs_docker"], kube["destroy_vs_docker"]) == (12.5, 5.0, 6.0)
    assert kube["ready_s"] == 5.5 and kube["rollout_s"] == 5.0


def test_the_report_has_the_kubernetes_table_and_chart(tmp_path):
    result = {"benchmark": "kubernetes", "rounds": 2, "cluster_start_s": 8.5, "results": rows(SAMPLES, [1], {1: 1.0})}
    write_reports([result], tmp_path)
    table = (tmp_path / "report.md").read_text()
    assert "| agents | way | cpus_each | median_s | min_s | max_s | vs_docker | up_s | destroy_s | destroy_vs_docker " \
           "| namespace_s | created_s | scheduled_s | started_s | ready_s | rollout_s |" in table
    assert "| 1 | kubernetes | 1.0 | 12.5 | 12.0 | 13.0 | 5.0 | 12.0 | 7.5 | 6.0 | 1.0 | 2.0 | 3.0 | 3.0 | 5.5 | 5.0 |" in table
    assert "cluster_start_s: `8.5`" in table
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
