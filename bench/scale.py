"""Scale: the largest fleet this machine holds with every agent answering, and how `pulumi up`
time grows with the fleet.

A bounded search: fleets of the given sizes in increasing order (e.g. 20, 40, 80, 160), each a
fresh stack brought up, checked (every agent answers a git command over SSH), measured and
destroyed. It stops at the first size that fails (`pulumi up` fails or an agent does not answer
in time), or when the next size would not fit in the time budget (estimated from the last one,
growing linearly). Memory is the sum of the agents' cgroup memory once every agent answers;
state is the bytes of `pulumi stack export` per agent. The aims (issue 15): the per-agent cost at
the largest size within 1.25x of the smallest's, and state per agent at most 8 KB.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from bench.common import (
    Workbench,
    aim,
    first_error,
    free_ports,
    load,
    seconds,
    stack_endpoints,
    timed,
    wait_until_answers,
)
from bench.footprint import memory

GROWTH_AIM = 1.25
STATE_AIM_KB = 8.0
def one_size(bench: Workbench, size: int) -> dict[str, Any]:
    load_before = load()
    try:
        stack, up_s = bench.up("scale", bench.fleet(size, ports=free_ports(size)))
    except subprocess.CalledProcessError as error:
        return {"agents": size, "ok": False, "error": first_error(error.stdout or "") or str(error)}
    try:
        outputs = stack.outputs()
        check_s = wait_until_answers(stack_endpoints(bench, outputs, stack.name), 120)
        agents_memory = sum(memory(f"agentfleet-{stack.name}-{name}")[0] for name in outputs["agents"])
        state_bytes = len(stack.export().encode())
        destroy_s, _ = timed(lambda: stack.pulumi("destroy", "--yes", "--skip-preview"))
        return {"agents": size, "ok": True, "up_s": seconds(up_s + check_s),
                "per_agent_s": round((up_s + check_s) / size, 3), "destroy_s": seconds(destroy_s),
                "agents_memory_mib": round(agents_memory / 2**20), "state_kb_per_agent": round(state_bytes / size / 1000, 2),
                "load_1min_before": load_before}
    except TimeoutError as error:
        return {"agents": size, "ok": False, "error": str(error)[:300]}
    finally:
        bench.discard_stack(stack)


def run(bench: Workbench, sizes: list[int], budget_s: float) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    stopped = "every size done"
    for size in sorted(sizes):
        if rows:
            last = rows[-1]
            estimate = (last["up_s"] + last["destroy_s"]) * size / last["agents"]
            if time.perf_counter() - started + estimate > budget_s:
                stopped = f"{size} agents would not fit in the {budget_s:g} s budget (about {estimate:.0f} s)"
                break
        rows.append(one_size(bench, size))
        print(f"  scale {size} agents: " + (f"{rows[-1]['up_s']:.1f} s" if rows[-1]["ok"] else rows[-1]["error"]),
              flush=True)
        if not rows[-1]["ok"]:
            stopped = f"{size} agents failed"
            break
    largest = max((r["agents"] for r in rows if r["ok"]), default=0)
    return {"benchmark": "scale", "largest_ok": largest, "stopped": stopped, "budget_s": budget_s,
            "results": rows, "aims": aims(rows, sizes)}


def aims(rows: list[dict[str, Any]], sizes: list[int]) -> list[dict[str, Any]]:
    """Growth from the smallest to the largest size that came up, and state per agent there."""
    done = [r for r in rows if r["ok"]]
    if not done:
        return []
    small, large = done[0], done[-1]
    command = f"python -m bench --only scale --scale-sizes {','.join(map(str, sorted(sizes)))} --scale-budget 3000"
    found = [aim(f"state per agent, {large['agents']} agents (`pulumi stack export` bytes / agents)",
                 large["state_kb_per_agent"], STATE_AIM_KB, " kB", command)]
    if large is not small:
        found.insert(0, aim(f"per-agent cost, {large['agents']} vs {small['agents']} agents",
                            large["per_agent_s"] / small["per_agent_s"], GROWTH_AIM, "x", command,
                            f"{large['per_agent_s']:.2f} s / {small['per_agent_s']:.2f} s per agent"))
    return found
