"""State per agent: what one more agent adds to the stack's state, and what of it is what.

The measure (issue 27): `pulumi stack export` bytes of a fleet of 2 minus those of the same fleet
of 1, so what every stack has once (the fleet's network, image, provider, outputs' frame) does not
count. The breakdown gives the second agent's resources by type, each its bytes in the export
(inputs, outputs, dependencies), so the report says where the bytes go. Aim: at most 8 KB.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from bench.common import Workbench, aim

STATE_AIM_KB = 8.0
COMMAND = "python -m bench --only state"


def resource_bytes(export: str, agent: str) -> dict[str, int]:
    """Bytes of each resource type of one agent in an export (its URN names the agent)."""
    by_type: dict[str, int] = defaultdict(int)
    for resource in json.loads(export)["deployment"].get("resources", []):
        name = resource["urn"].rsplit("::", 1)[-1]
        if name == agent or name.startswith(f"{agent}-"):
            by_type[resource["type"]] += len(json.dumps(resource, indent=4).encode())
    return dict(sorted(by_type.items(), key=lambda item: -item[1]))


def run(bench: Workbench) -> dict[str, Any]:
    fleet = bench.fleet(2)
    one = {**fleet, "agents": fleet["agents"][:1]}
    stack, _ = bench.up("state", one)
    try:
        one_bytes = len(stack.export().encode())
        stack.set_fleet(fleet)
        stack.pulumi("up", "--yes", "--skip-preview")
        export = stack.export()
        two_bytes = len(export.encode())
    finally:
        bench.discard_stack(stack)
    per_agent_kb = (two_bytes - one_bytes) / 1000
    second = fleet["agents"][1]["name"]
    rows = [{"resource": kind.rsplit(":", 1)[-1], "kb": round(size / 1000, 2)}
            for kind, size in resource_bytes(export, second).items()]
    return {"benchmark": "state", "results": rows, "per_agent_kb": round(per_agent_kb, 2),
            "stack_kb": {"1 agent": round(one_bytes / 1000, 1), "2 agents": round(two_bytes / 1000, 1)},
            "aims": [aim("state per agent (export bytes of a fleet of 2 minus a fleet of 1)", per_agent_kb,
                         STATE_AIM_KB, " kB", COMMAND)]}
