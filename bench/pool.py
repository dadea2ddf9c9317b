"""Warm pool: agents claimed from booted members instead of booted fresh (docs/configuration.md).

Two figures, side by side in one run:

- `20 agents claimed from a warm pool of 20`: a stack of one agent and `pool: {size: 20}` is
  brought up (untimed: the pool fills); then 20 agents are added and `pulumi up` runs. The agents
  are ready when the last of their containers is done (the claim, the delivery of identity, keys
  and first clone, sshd offering the pinned key: the engine's event for the container resource)
  plus the git command over SSH that then checks every one of them; the same `up` goes on to
  refill the pool, reported as `up_s`. Alternated per round with the raw-Docker PoC of
  bench/provisioning.py for as many agents.
- `claim to git over SSH`: one claim at a time, by the product's drivers (the workspace volume
  claims a member, the container resource delivers its agent), until a fresh `ssh … git log` in
  the cloned workspace answers; p50 over the rounds.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from pulumi.automation.events import OpType

from bench.common import (
    READY_COMMAND,
    Workbench,
    aim,
    answers_git,
    free_fleet,
    load,
    median,
    remove_labelled,
    stack_endpoints,
    timed,
    wait_until_answers,
)
from bench.provisioning import via_clone
from components.backends.docker.backend import container_fields, engine_fields, member_template, network_name, volume_name
from components.backends.docker.driver import ContainerDriver, NetworkDriver, VolumeDriver
from components.backends.docker.pool import pool_hint, pool_name, shape
from components.backends.docker.pool_driver import PoolDriver
from components.cloudinit import AgentKeys, render_cloud_config
from components.keys import generate_ed25519

FLEET_AIM = 1.0  # x the raw-Docker PoC
CLAIM_AIM_MS = 150.0
WAYS = ("pulumi up, claimed from the pool", "raw Docker PoC")


def claimed_fleet(bench: Workbench, size: int) -> dict[str, float]:
    """`size` agents added to a stack whose pool holds `size` members; seconds until they answer."""
    fleet = bench.fleet(size + 1, pool={"size": size})
    stack, _ = bench.up("pool", {**fleet, "agents": fleet["agents"][:1]})
    try:
        stack.set_fleet(fleet)
        done: list[float] = []

        def seen(event) -> None:
            outputs = event.res_outputs_event
            if (outputs is not None and outputs.metadata.type.endswith(":DockerContainer")
                    and outputs.metadata.op == OpType.CREATE):
                done.append(time.perf_counter())

        started = time.perf_counter()
        up_s, result = timed(lambda: stack.stack.up(on_output=lambda _: None, on_event=seen))
        outputs = {key: value.value for key, value in result.outputs.items()}
        new = {name: agent for name, agent in outputs["agents"].items() if name != "a-1"}
        check_s = wait_until_answers(stack_endpoints(bench, {**outputs, "agents": new}, stack.name), 60)
        if len(done) < size:
            raise AssertionError(f"{len(done)} container events for {size} agents")
        return {"seconds": max(done) - started + check_s, "up_s": up_s}
    finally:
        bench.discard_stack(stack)


def claim_rounds(bench: Workbench, rounds: int) -> list[float]:
    """Milliseconds from each claim to the agent's first git over SSH, one claim at a time."""
    assert bench.git is not None
    name, context, spec = free_fleet(bench, f"claim-{bench.run_id}", rounds)
    spec = replace(spec, pool_size=rounds)
    host = spec.hosts[0]
    engines = {"engines": {host.name: engine_fields(host)}, "placement": host.name}
    template = member_template(context, list(spec.agents), host)
    pool = pool_name(context, host)
    timings = []
    try:
        NetworkDriver().create(network_name(context), {"labels": context.labels(), **engines}, None)
        PoolDriver().create(pool, {"name": pool, "size": rounds, "member": template, "shape": shape(template),
                                   "agents": [], "state": "present", **engines}, None)
        for agent in spec.agents:
            operator_private, operator_public = generate_ed25519("operator")
            host_private, host_public = generate_ed25519("host")
            user_data = render_cloud_config(agent, AgentKeys(operator_public, host_private, host_public,
                                                             remote_private_key=bench.deploy_key_private),
                                            fleet=spec, policy=False)
            fields = container_fields(context, agent)
            volume = {"name": volume_name(context, agent.name), "labels": context.labels(agent.name),
                      "machine": context.machine_name(agent.name), **engines,
                      **pool_hint(spec, context, agent, fields)}
            started = time.perf_counter()
            claimed = VolumeDriver().create(volume["name"], volume, None)
            made = ContainerDriver().create(fields["name"], {**fields, "workspace_volume": claimed["volume"],
                                                             "host_public_key": host_public}, user_data)
            key = bench.write_file(f"{name}/{agent.name}.key", operator_private)
            known = bench.write_file(f"{name}/{agent.name}.known_hosts",
                                     f"[{made['host']}]:{made['port']} {' '.join(host_public.split()[:2])}\n")
            deadline = time.monotonic() + 30
            while not answers_git(made["host"], int(made["port"]), key, known):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{fields['name']} did not answer `{READY_COMMAND}` within 30 s")
                time.sleep(0.02)
            timings.append((time.perf_counter() - started) * 1000)
            if not claimed["volume"].startswith(f"{pool}."):
                raise AssertionError(f"{agent.name} booted fresh: no member was claimed")
            print(f"  claim {len(timings)}/{rounds}: {timings[-1]:.0f} ms", flush=True)
    finally:
        remove_labelled(f"agentfleet.stack={name}")
    return timings


def run(bench: Workbench, size: int, rounds: int, claims: int) -> dict[str, Any]:
    measure = {WAYS[0]: lambda: claimed_fleet(bench, size), WAYS[1]: lambda: via_clone(bench, size)}
    samples: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    loads = []
    for round_ in range(rounds):
        for way in (WAYS if round_ % 2 == 0 else WAYS[::-1]):
            loads.append(load())
            samples[way].append(measure[way]())
            print(f"  pool round {round_ + 1}/{rounds}, {size} agents, {way}: {samples[way][-1]['seconds']:.1f} s",
                  flush=True)
    loads.append(load())
    claim_ms = claim_rounds(bench, claims)
    medians = {way: median(s["seconds"] for s in samples[way]) for way in WAYS}
    rows = [{"agents": size, "way": way, "median_s": round(medians[way], 2),
             "min_s": round(min(s["seconds"] for s in samples[way]), 2),
             "ratio_to_poc": round(medians[way] / medians[WAYS[1]], 2),
             **({"up_with_refill_s": round(median(s["up_s"] for s in samples[way]), 2)} if way == WAYS[0] else {})}
            for way in WAYS]
    p50 = median(claim_ms)
    return {
        "benchmark": "pool", "rounds": rounds, "load_1min_median": round(median(loads), 2),
        "ready": f"`{READY_COMMAND}` over SSH (PoC: in the container)", "results": rows,
        "claim_ms": [round(v) for v in claim_ms],
        "aims": [
            aim(f"{size} agents claimed from a warm pool of {size}: `pulumi up` / raw Docker PoC",
                medians[WAYS[0]] / medians[WAYS[1]], FLEET_AIM, "x",
                f"python -m bench --only pool --pool-agents {size}",
                f"{medians[WAYS[0]]:.1f} s / {medians[WAYS[1]]:.1f} s"),
            aim("claim from the pool to git over SSH, p50", p50, CLAIM_AIM_MS, " ms",
                f"python -m bench --only pool --pool-claims {claims}", f"p50 of {claims}"),
        ],
    }
