"""Readiness: from the start of one agent's container to its first git command over SSH.

One agent at a time (the machine otherwise idle, as far as this benchmark is concerned), made by
the product's own ContainerDriver (its policy container, then the agent's: create, the NoCloud
seed copied in, start, the wait for cloud-init and sshd, the pinned host key) from the
container's own fields and the cloud-config the Docker backend renders (the policy outside it).
An agent's first container to start is its policy container, so that start is the agent's.
Where the time goes, per round:

- `create + seed + start`: the Engine API creates both containers, joins the extra network,
  uploads the policy and the seed and starts the policy container (until the engine's StartedAt);
- `policy + agent start`: from the policy container's start to the agent container's;
- `cloud-init start-up`: from the agent's start to cloud-init's first stage (Python, imports,
  the policy container's gate);
- `cloud-init stages`: init-local start to modules-final end (cloud-init's status.json; sshd
  starts before the final stage, the first clone's);
- `sshd + pinned key`: from cloud-init's end until the driver returned, having seen that end and
  sshd offer the pinned key (checked while the final stage ran);
- `first git over SSH`: a fresh `ssh … git log` answering.

`total` is from the first container's start to the first git answer (the aim: at most 0.4 s);
`create_to_git` adds what happens before the start.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from bench.common import READY_COMMAND, Workbench, aim, answers_git, free_fleet, load, median, remove_labelled
from bench.scripted import ENDPOINT, pinned_fields
from components.backends.docker.backend import network_name
from components.backends.docker.driver import ContainerDriver, NetworkDriver, VolumeDriver, client
from components.backends.docker.policy import policy_name
from components.cloudinit import AgentKeys, render_cloud_config
from components.keys import generate_ed25519

BEFORE_START = ("create + seed + start",)
AFTER_START = ("policy + agent start", "cloud-init start-up", "cloud-init stages", "sshd + pinned key", "first git over SSH")
PHASES = BEFORE_START + AFTER_START
AIM_S = 0.4


def engine_time(stamp: str) -> float:
    """Seconds since the epoch of an engine timestamp (RFC 3339 with nanoseconds)."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{whole}.{(fraction or '0')[:6]}+00:00").timestamp()


def one_round(bench: Workbench, index: int) -> dict[str, float]:
    assert bench.git is not None
    stack, context, spec = free_fleet(bench, f"ready-{bench.run_id}-{index}", 1)
    agent = spec.agents[0]
    operator_private, operator_public = generate_ed25519("operator")
    host_private, host_public = generate_ed25519("host")
    user_data = render_cloud_config(agent, AgentKeys(operator_public, host_private, host_public,
                                                     remote_private_key=bench.deploy_key_private),
                                    policy=False)
    fields = {**pinned_fields(context, agent), "host_public_key": host_public}
    port = int(fields["port"])
    key = bench.write_file(f"{stack}/key", operator_private)
    known = bench.write_file(f"{stack}/known_hosts",
                             f"[{ENDPOINT}]:{port} {' '.join(host_public.split()[:2])}\n")
    try:
        NetworkDriver().create(network_name(context), {"labels": context.labels()}, None)
        VolumeDriver().create(fields["workspace_volume"], {"labels": context.labels(agent.name)}, None)
        started = time.time()
        ContainerDriver().create(fields["name"], fields, user_data)
        key_seen = time.time()
        deadline = time.monotonic() + 30
        while not answers_git(ENDPOINT, port, key, known):
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent {fields['name']} offered its key but did not answer "
                                   f"`{READY_COMMAND}` within 30 s")
            time.sleep(0.05)
        ready = time.time()
        container = client().containers.get(fields["name"])
        running = engine_time(container.attrs["State"]["StartedAt"])
        first_start = engine_time(client().containers.get(policy_name(fields["name"])).attrs["State"]["StartedAt"])
        code, output = container.exec_run(["cat", "/run/cloud-init/status.json"])
        if code != 0:
            raise RuntimeError(f"agent {fields['name']}: no cloud-init status (exit {code}): {output.decode()}")
        status = json.loads(output)["v1"]
    finally:
        remove_labelled(f"agentfleet.stack={stack}")
    first, last = status["init-local"]["start"], status["modules-final"]["finished"]
    return {"total": ready - first_start, "create_to_git": ready - started,
            "create + seed + start": first_start - started, "policy + agent start": running - first_start,
            "cloud-init start-up": first - running,
            "cloud-init stages": last - first, "sshd + pinned key": key_seen - last,
            "first git over SSH": ready - key_seen}


def run(bench: Workbench, rounds: int) -> dict[str, Any]:
    samples, loads = [], []
    for index in range(rounds):
        loads.append(load())
        samples.append(one_round(bench, index))
        print(f"  readiness round {index + 1}/{rounds}: {samples[-1]['total']:.2f} s from the start", flush=True)
    rows = [{"phase": phase, "median_s": round(median(s[phase] for s in samples), 3)}
            for phase in (*PHASES, "total", "create_to_git")]
    total = median(s["total"] for s in samples)
    return {"benchmark": "readiness", "rounds": rounds, "load_1min_median": round(median(loads), 2),
            "ready": f"`{READY_COMMAND}` over SSH", "results": rows, "after_start": list(AFTER_START),
            "total_s": [round(s["total"], 3) for s in samples],
            "aims": [aim("1 agent, container start to first git over SSH", total, AIM_S, " s",
                         "python -m bench --only readiness", f"median of {rounds}")]}
