"""Provider: 20 agents (by default) brought up by agentfleet's own provider plugin, by the
dynamic providers of agentfleet 0.1 (its last commit, from this clone's history), and by the raw
Docker proof of concept, alternated in every round so that other load hits all alike.

Each way ends when every agent answers a git command (over SSH for the Pulumi ways). Beside the
time, the containers' creation times say how many creates ran at once: the dynamic provider serves
four operations at a time, the plugin as many as the engine's `--parallel` allows (its default is
4 per core), so the plugin runs twice: at the default and at `--parallel 64`.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import datetime
from typing import Any

from bench.common import Workbench, load, median, seconds, stack_endpoints, timed, wait_until_answers
from bench.provisioning import via_clone
from tests.e2e.support import LAST_DYNAMIC_COMMIT, FleetStack, project_at

WAYS = ("provider plugin", "provider plugin, --parallel 64", "dynamic provider (0.1)", "raw Docker PoC")
# The first burst of creates: how many containers were created this soon after the first one.
BURST_S = 1.0


def first_burst(created: list[float]) -> int:
    """How many containers were created within BURST_S of the first (times in seconds)."""
    return sum(1 for moment in created if moment - min(created) <= BURST_S)


def creation_times(stack: FleetStack, size: int) -> list[float]:
    names = [f"agentfleet-{stack.name}-a-{i}" for i in range(1, size + 1)]
    inspected = json.loads(subprocess.run(["docker", "inspect", *names], capture_output=True, text=True,
                                          check=True).stdout)
    return [datetime.fromisoformat(c["Created"][:26].rstrip("Z") + "+00:00").timestamp() for c in inspected]


def via_stack(bench: Workbench, stack: FleetStack, size: int, *options: str) -> dict[str, Any]:
    stack.set_fleet(bench.fleet(size))
    try:
        up_s, _ = timed(lambda: stack.pulumi("up", "--yes", "--skip-preview", *options))
        check_s = wait_until_answers(stack_endpoints(bench, stack.outputs(), stack.name), 60)
        return {"seconds": up_s + check_s, "burst": first_burst(creation_times(stack, size))}
    finally:
        bench.discard_stack(stack)


def old_stack(bench: Workbench, project) -> FleetStack:
    stack = FleetStack(project, f"dyn-{uuid.uuid4().hex[:6]}")
    bench.stacks.append(stack)
    stack.set_secret("benchDeployKey", bench.deploy_key_private)
    return stack


def run(bench: Workbench, size: int, rounds: int) -> dict[str, Any]:
    old_project = project_at(LAST_DYNAMIC_COMMIT, bench.scratch / "agentfleet-0.1")
    measure = {
        "provider plugin": lambda: via_stack(bench, bench.stack("plugin"), size),
        "provider plugin, --parallel 64": lambda: via_stack(bench, bench.stack("plugin64"), size, "--parallel", "64"),
        "dynamic provider (0.1)": lambda: via_stack(bench, old_stack(bench, old_project), size),
        "raw Docker PoC": lambda: via_clone(bench, size),
    }
    samples: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    loads = []
    for round_ in range(rounds):
        for way in WAYS[round_ % len(WAYS):] + WAYS[:round_ % len(WAYS)]:
            loads.append(load())
            samples[way].append(measure[way]())
            print(f"  provider round {round_ + 1}/{rounds}, {size} agents, {way}: {samples[way][-1]['seconds']:.1f} s"
                  + (f", {samples[way][-1]['burst']} created in the first {BURST_S:g} s" if "burst" in samples[way][-1]
                     else ""), flush=True)
    medians = {way: median(s["seconds"] for s in samples[way]) for way in WAYS}
    rows = [{"agents": size, "way": way, "median_s": seconds(medians[way]),
             "min_s": seconds(min(s["seconds"] for s in samples[way])),
             "max_s": seconds(max(s["seconds"] for s in samples[way])),
             "ratio_to_poc": round(medians[way] / medians["raw Docker PoC"], 2),
             "ratio_to_dynamic": round(medians[way] / medians["dynamic provider (0.1)"], 2),
             "created_in_first_s": " / ".join(str(s["burst"]) for s in samples[way] if "burst" in s)}
            for way in WAYS]
    return {"benchmark": "provider", "rounds": rounds, "load_1min_median": round(median(loads), 2),
            "burst_s": BURST_S, "command": f"python -m bench --only provider --provider-agents {size}",
            "results": rows}
