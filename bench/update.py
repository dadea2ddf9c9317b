"""No-change update: `pulumi preview` and `pulumi up` on an unchanged fleet of N agents.

What a user pays to learn that nothing changed (or to re-apply a fleet that is up): the program
runs, every machine is read back (Pulumi.yaml sets `refresh: always`), every resource is diffed,
nothing is created. `pulumi up --yes` (what `make up` runs) is a preview followed by the update,
each with its refresh; `--skip-preview` is the update alone. The aim (issue 15): `pulumi up --yes`
of 20 agents under 5 s.
"""

from __future__ import annotations

from typing import Any

from bench.common import Workbench, aim, load, median, seconds, timed

AIM_S = 5.0
COMMANDS = {
    "pulumi preview": ("preview",),
    "pulumi up --yes --skip-preview": ("up", "--yes", "--skip-preview"),
    "pulumi up --yes": ("up", "--yes"),
}


def run(bench: Workbench, size: int, rounds: int) -> dict[str, Any]:
    stack, up_s = bench.up("update", bench.fleet(size))
    try:
        samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
        loads = []
        for round_ in range(rounds):
            for name, args in COMMANDS.items():
                loads.append(load())
                elapsed, output = timed(lambda args=args: stack.pulumi(*args))
                if any(word in output for word in (" created", " replaced", " updated", " deleted")):
                    raise AssertionError(f"`{name}` on an unchanged fleet changed something:\n{output[-800:]}")
                samples[name].append(elapsed)
            print(f"  no-change round {round_ + 1}/{rounds}: "
                  + ", ".join(f"{n} {v[-1]:.1f} s" for n, v in samples.items()), flush=True)
    finally:
        bench.discard_stack(stack)
    return {
        "benchmark": "no_change_update", "agents": size, "rounds": rounds, "first_up_s": seconds(up_s),
        "load_1min_median": round(median(loads), 2),
        "results": [{"command": name, "median_s": seconds(median(v)), "min_s": seconds(min(v)),
                     "max_s": seconds(max(v))} for name, v in samples.items()],
        "aims": [aim(f"no-change `pulumi up --yes` of {size} agents, with refresh", median(samples["pulumi up --yes"]),
                     AIM_S, " s", f"python -m bench --only update --update-agents {size}", f"median of {rounds}")],
    }
