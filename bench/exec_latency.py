"""Warm `git status` round trip: agentfleet's client vs `docker exec` vs a fresh OpenSSH call.

Why these three: `docker exec` is what a shell script around containers would do (no SSH at all);
a fresh `ssh` is what a person or a naive orchestrator would do; the client keeps one SSH
connection per agent. The three run interleaved in one loop so machine noise hits all alike.
The aim (issue 15): keep the warm client's round trip at 10 ms.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentfleet import Fleet
from agentfleet.sshconfig import SshFiles, write_ssh_files
from bench.common import aim

COMMAND = "git status --short --branch"
AIM_MS = 10.0


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(outputs: dict[str, Any], stack: str, rounds: int, directory: Path | None = None) -> dict[str, Any]:
    """`directory` receives the SSH files (keys of the fleet): the caller's scratch, removed after."""
    fleet = Fleet.from_outputs(outputs, stack)
    agent = fleet.names[0]
    container = f"agentfleet-{stack}-{agent}"
    files = SshFiles(directory or Path(tempfile.mkdtemp(prefix="agentfleet-bench-")))
    write_ssh_files(fleet.agents.values(), files, stack)
    config = files.config
    client = fleet.agent(agent)
    client.run("git init -q . 2>/dev/null; true")

    def via_client() -> None:
        assert client.run(COMMAND).ok

    def via_docker_exec() -> None:
        subprocess.run(["docker", "exec", "-u", "agent", "-w", "/home/agent/workspace", container,
                        "sh", "-c", COMMAND], check=True, capture_output=True)

    def via_fresh_ssh() -> None:
        subprocess.run(["ssh", "-F", str(config), agent, f"cd workspace && {COMMAND}"],
                       check=True, capture_output=True)

    ways = {"agentfleet client (warm)": via_client, "docker exec": via_docker_exec,
            "fresh ssh": via_fresh_ssh}
    for action in ways.values():  # warm-up: first connection, page cache
        action()
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, action in ways.items():
            samples[name].append(timed(action))
    fleet.close()
    baseline = statistics.median(samples["docker exec"])
    warm_ms = statistics.median(samples["agentfleet client (warm)"]) * 1000
    return {
        "benchmark": "exec_latency",
        "command": COMMAND,
        "rounds": rounds,
        "results": [
            {"way": name, "median_ms": round(statistics.median(values) * 1000, 2),
             "p90_ms": round(sorted(values)[int(0.9 * len(values)) - 1] * 1000, 2),
             "ratio_to_docker_exec": round(statistics.median(values) / baseline, 2)}
            for name, values in samples.items()
        ],
        "aims": [aim("warm `git status` through the client", warm_ms, AIM_MS, " ms",
                     "python -m bench --only exec_latency", f"median of {rounds}")],
    }
