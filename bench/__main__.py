"""`python -m bench` (or `make bench`): run the benchmarks, write bench/results/report.{json,md,png}.

Every benchmark works on a throwaway copy of the project, its own stacks, a git server container
on its own network, and cleans all of it up, also when it fails. `--only` picks benchmarks; the
reports keep the latest result of each benchmark, so a partial run updates only its own tables.
Each benchmark's result is written as soon as it is done: a run cut short (the Docker daemon
restarted under it) keeps what it finished.
The defaults take about 30-35 minutes on 2 cores (kubernetes: about 6, plus the test cluster's
binaries, which `make bench` has setup build; overlaps: about 10, most of it two fleets of 20
agents cloning their repositories).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (exec_latency, footprint, hosts, kubernetes, overlaps, pool, provider, provisioning, readiness, scale,
                   state, update)
from bench.common import Workbench
from bench.report import write_reports

RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARKS = ("provisioning", "provider", "readiness", "pool", "update", "footprint", "scale", "state", "exec_latency",
              "overlaps", "hosts", "kubernetes")


def sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def exec_latency_run(bench: Workbench, rounds: int) -> dict[str, Any]:
    stack, _ = bench.up("exec", bench.fleet(1))
    try:
        return exec_latency.run(stack, rounds, bench.scratch / "exec-latency")
    finally:
        bench.discard_stack(stack)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated benchmarks to run (default all: {','.join(BENCHMARKS)})")
    parser.add_argument("--rounds", type=int, default=3, help="provisioning rounds, each way and size (3)")
    parser.add_argument("--sizes", type=sizes, default=[1, 5, 20], help="provisioning fleet sizes (1,5,20)")
    parser.add_argument("--provider-agents", type=int, default=20, help="provider: fleet size (20)")
    parser.add_argument("--provider-rounds", type=int, default=2, help="provider: rounds each way (2)")
    parser.add_argument("--readiness-rounds", type=int, default=10, help="readiness rounds (10)")
    parser.add_argument("--pool-agents", type=int, default=20, help="pool: agents claimed from a pool as large (20)")
    parser.add_argument("--pool-rounds", type=int, default=2, help="pool: rounds each way (2)")
    parser.add_argument("--pool-claims", type=int, default=10, help="pool: single claims timed to git over SSH (10)")
    parser.add_argument("--update-agents", type=int, default=20, help="no-change update fleet size (20)")
    parser.add_argument("--update-rounds", type=int, default=3, help="no-change update rounds (3)")
    parser.add_argument("--footprint-agents", type=int, default=5, help="footprint fleet size (5)")
    parser.add_argument("--commits", type=int, default=5000, help="generated repository: commits (5000)")
    parser.add_argument("--files", type=int, default=1500, help="generated repository: files (1500)")
    parser.add_argument("--scale-sizes", type=sizes, default=[20, 40, 80], help="scale search sizes (20,40,80)")
    parser.add_argument("--scale-budget", type=float, default=420, help="scale search time budget, s (420)")
    parser.add_argument("--exec-rounds", type=int, default=30, help="exec latency rounds (30)")
    parser.add_argument("--overlaps-agents", type=sizes, default=[5, 10, 20], help="overlaps: fleet sizes (5,10,20)")
    parser.add_argument("--overlaps-files", type=sizes, default=[1000, 5000],
                        help="overlaps: generated repository sizes, files (1000,5000)")
    parser.add_argument("--overlaps-commits", type=int, default=500, help="overlaps: generated repository: commits (500)")
    parser.add_argument("--overlaps-rounds", type=int, default=3, help="overlaps: rounds each way and size (3)")
    parser.add_argument("--hosts-agents", type=int, default=20, help="hosts: fleet size, split over two hosts (20)")
    parser.add_argument("--hosts-rounds", type=int, default=2, help="hosts: rounds each way (2)")
    parser.add_argument("--kube-sizes", type=sizes, default=[1, 5, 20], help="kubernetes: fleet sizes (1,5,20)")
    parser.add_argument("--kube-rounds", type=int, default=2, help="kubernetes: rounds each way and size (2)")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    runs: dict[str, Callable[[Workbench], dict[str, Any]]] = {
        "provisioning": lambda b: provisioning.run(b, args.sizes, args.rounds),
        "provider": lambda b: provider.run(b, args.provider_agents, args.provider_rounds),
        "readiness": lambda b: readiness.run(b, args.readiness_rounds),
        "pool": lambda b: pool.run(b, args.pool_agents, args.pool_rounds, args.pool_claims),
        "update": lambda b: update.run(b, args.update_agents, args.update_rounds),
        "footprint": lambda b: footprint.run(b, args.footprint_agents, args.commits, args.files),
        "scale": lambda b: scale.run(b, args.scale_sizes, args.scale_budget),
        "state": state.run,
        "exec_latency": lambda b: exec_latency_run(b, args.exec_rounds),
        "overlaps": lambda b: overlaps.run(b, args.overlaps_agents, args.overlaps_files, args.overlaps_commits,
                                           args.overlaps_rounds),
        "hosts": lambda b: hosts.run(b, args.hosts_agents, args.hosts_rounds),
        "kubernetes": lambda b: kubernetes.run(b, args.kube_sizes, args.kube_rounds),
    }
    with Workbench() as bench:
        for name in BENCHMARKS:
            if name in chosen:
                print(f"{name} …", flush=True)
                started = time.perf_counter()
                result = runs[name](bench)
                result["took_s"] = round(time.perf_counter() - started)
                write_reports([result], RESULTS)
    print((RESULTS / "report.md").read_text())


if __name__ == "__main__":
    main()
