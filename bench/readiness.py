"""Readiness: from `docker start` of one agent to its first successful git command over SSH.

One agent at a time (the machine otherwise idle, as far as this benchmark is concerned), created
with the product's `docker create` options and cloud-config, seeded with `agentfleet-seed` as
the backend does. Where the time goes, per round:

- `docker start`: the engine starts the container (network, published port, runc);
- `seed`: `docker exec -i … agentfleet-seed` delivers the cloud-config;
- `cloud-init start-up`: from the seed to cloud-init's first stage starting (Python, imports);
- `cloud-init stages`: init-local start to modules-final end (cloud-init's status.json);
- `sshd + first git`: from cloud-init's end to `git log` answering over SSH (sshd start, the
  SSH handshake, the poll interval of 50 ms).
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from bench.common import (
    READY_COMMAND,
    Workbench,
    answers_git,
    load,
    median,
    remove_labelled,
)
from components.backends import MachineContext
from components.backends.docker import create_options, volume_name
from components.cloudinit import AgentKeys, render_cloud_config
from components.keys import generate_ed25519
from components.spec import load_fleet

PHASES = ("docker start", "seed", "cloud-init start-up", "cloud-init stages", "sshd + first git")
POLL_S = 0.05
TIMEOUT_S = 120


def docker(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True, check=True).stdout


def one_round(bench: Workbench, index: int) -> dict[str, float]:
    assert bench.git is not None
    stack = f"ready-{bench.run_id}-{index}"
    context = MachineContext(stack, (bench.git.network,))
    agent = load_fleet(stack, bench.fleet(1), lambda key: bench.deploy_key_private).agents[0]
    label = f"agentfleet.stack={stack}"
    operator_private, operator_public = generate_ed25519("operator")
    host_private, host_public = generate_ed25519("host")
    user_data = render_cloud_config(agent, AgentKeys(operator_public, host_private, host_public,
                                                     remote_private_key=bench.deploy_key_private))
    key = bench.write_file(f"{stack}/key", operator_private)
    known = bench.write_file(f"{stack}/known_hosts",
                             f"[127.0.0.1]:{agent.ssh_port} {' '.join(host_public.split()[:2])}\n")
    name = context.machine_name(agent.name)
    try:
        docker("network", "create", "--label", label, f"agentfleet-{stack}")
        docker("volume", "create", "--label", label, volume_name(context, agent.name))
        docker("create", "--name", name, *create_options(context, agent))
        docker("network", "connect", bench.git.network, name)
        started = time.time()
        docker("start", name)
        container_started = time.time()
        docker("exec", "-i", name, "agentfleet-seed", name, name, stdin=user_data)
        seeded = time.time()
        deadline = time.monotonic() + TIMEOUT_S
        while not answers_git("127.0.0.1", agent.ssh_port, key, known):
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent {name} did not answer `{READY_COMMAND}` within {TIMEOUT_S} s")
            time.sleep(POLL_S)
        ready = time.time()
        status = json.loads(docker("exec", name, "cat", "/run/cloud-init/status.json"))["v1"]
    finally:
        remove_labelled(label)
    first, last = status["init-local"]["start"], status["modules-final"]["finished"]
    return {"total": ready - started, "docker start": container_started - started,
            "seed": seeded - container_started, "cloud-init start-up": first - seeded,
            "cloud-init stages": last - first, "sshd + first git": ready - last}


def run(bench: Workbench, rounds: int) -> dict[str, Any]:
    samples, loads = [], []
    for index in range(rounds):
        loads.append(load())
        samples.append(one_round(bench, index))
        print(f"  readiness round {index + 1}/{rounds}: {samples[-1]['total']:.2f} s", flush=True)
    rows = [{"phase": phase, "median_s": round(median(s[phase] for s in samples), 3)}
            for phase in (*PHASES, "total")]
    return {"benchmark": "readiness", "rounds": rounds, "load_1min_median": round(median(loads), 2),
            "ready": f"`{READY_COMMAND}` over SSH", "results": rows,
            "total_s": [round(s["total"], 3) for s in samples]}
