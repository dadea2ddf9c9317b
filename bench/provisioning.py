"""Provisioning: a fresh fleet of N agents until every agent answers a git command over SSH.

Three ways, alternated in every round so that other load on the machine hits all alike:

- `pulumi up`: `pulumi up --yes --skip-preview` of a new stack, then the git command over SSH;
- `docker script`: the same work scripted directly with the Docker CLI, every agent in parallel
  (bench/scripted.py): the volume, `docker create` with the container's own fields, the
  product's cloud-config (fresh keys) copied in as the NoCloud seed before `docker start`, the
  backend's wait in the container for cloud-init's result and sshd, then the git command over SSH;
- `raw Docker PoC`: the seed's proof of concept re-enacted: a plain container per agent that
  clones the repository, makes the agent's branch and commits on it, with no SSH and no
  cloud-init: the lower bound of what a fleet of clones costs.

Every agent clones the git server's repository on first boot; "ready" is `git log -1` in the
workspace succeeding (over SSH where there is SSH). The aims (issue 15), from the medians of this
run: 20 agents within 2x the raw Docker PoC, 1 agent within 1.5x the script.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from typing import Any

from bench.common import (
    READY_COMMAND,
    SSH_OPTIONS,
    Workbench,
    aim,
    free_fleet,
    load,
    median,
    remove_labelled,
    seconds,
    stack_endpoints,
    timed,
    wait_until_answers,
)
from bench.scripted import prepare
from components.backends.docker.driver import CLOUD_INIT_RESULT, WAIT_FOR_BOOT

WAYS = ("pulumi up", "docker script", "raw Docker PoC")
AIMS = {20: ("raw Docker PoC", 2.0), 1: ("docker script", 1.5)}  # agents: (baseline, at most this ratio)
READY_TIMEOUT_S = 180

AGENT_SCRIPT = """
agent() {  # NAME PORT SEED KEY KNOWN_HOSTS VOLUME EXTRA_NETWORKS [docker create options...]
    name=$1 port=$2 seed=$3 key=$4 known=$5 volume=$6 extra=$7; shift 7
    deadline=$(( $(date +%s) + TIMEOUT ))
    docker volume create --label "$LABEL" "$volume" >/dev/null &&
    docker create "$@" >/dev/null || return 1
    for network in $extra; do docker network connect "$network" "$name" || return 1; done
    # The seed before the start, then the backend's wait for cloud-init's result and sshd.
    docker cp - "$name:/" <"$seed" &&
    docker start "$name" >/dev/null &&
    docker exec "$name" sh -c "$WAIT_FOR_BOOT" wait-for-boot "$deadline" "$RESULT" >/dev/null || return 1
    until ssh $SSH_OPTIONS -i "$key" -o UserKnownHostsFile="$known" -p "$port" agent@127.0.0.1 "$READY" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}
"""

CLONE_SCRIPT = """
agent() {  # NAME
    docker run -d --name "$1" --label "$LABEL" --network "$NETWORK" --entrypoint sleep "$IMAGE" infinity >/dev/null &&
    docker exec -i "$1" sh -c 'umask 077; cat >/tmp/key
        GIT_SSH_COMMAND="ssh -i /tmp/key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR" \\
            git clone -q "$0" /tmp/workspace && cd /tmp/workspace && git checkout -q -b "agent/$1" &&
        git -c user.name="$1" -c user.email="$1@bench.test" commit -q --allow-empty -m "Start agent/$1" &&
        git log -1 --format=%h' "$URL" "$1" <"$KEY" >/dev/null
}
"""


def run_jobs(prelude: str, calls: list[list[str]], env: dict[str, str]) -> None:
    """Run `agent ARGS…` for every call in parallel (background jobs); fail if any failed."""
    lines = [f"{shlex.quote(k)}={shlex.quote(v)}" for k, v in env.items()] + [prelude, "pids="]
    lines += [" ".join(shlex.quote(a) for a in ["agent", *call]) + " & pids=\"$pids $!\"" for call in calls]
    lines += ["failed=0", "for pid in $pids; do wait $pid || failed=$((failed + 1)); done",
              '[ "$failed" -eq 0 ] || { echo "$failed agents failed" >&2; exit 1; }']
    completed = subprocess.run(["sh", "-c", "\n".join(lines)], check=False, capture_output=True, text=True,
                               timeout=READY_TIMEOUT_S + 60)
    if completed.returncode:
        raise RuntimeError(f"the script failed: {completed.stderr.strip()[-500:]}")


def via_pulumi(bench: Workbench, size: int) -> dict[str, float]:
    stack, up_s = bench.up("prov", bench.fleet(size))
    try:
        endpoints = stack_endpoints(bench, stack.outputs(), stack.name)
        check_s = wait_until_answers(endpoints, 60)
        destroy_s, _ = timed(lambda: stack.pulumi("destroy", "--yes", "--skip-preview"))
        return {"seconds": up_s + check_s, "up_s": up_s, "destroy_s": destroy_s}
    finally:
        bench.discard_stack(stack)


def via_script(bench: Workbench, size: int) -> dict[str, float]:
    assert bench.git is not None
    name, context, spec = free_fleet(bench, f"script-{bench.run_id}-{size}", size)
    label = f"agentfleet.stack={name}"
    started = time.perf_counter()
    try:
        calls = []
        for agent in spec.agents:
            scripted = prepare(agent, context, bench.deploy_key_private, bench.scratch / name)
            calls.append([scripted.name, str(scripted.port), str(scripted.seed), str(scripted.key),
                          str(scripted.known_hosts), scripted.volume, " ".join(scripted.extra_networks),
                          *scripted.create_options])
        subprocess.run(["docker", "network", "create", "--label", label, f"agentfleet-{name}"],
                       check=True, capture_output=True)
        run_jobs(AGENT_SCRIPT, calls, {"LABEL": label, "TIMEOUT": str(READY_TIMEOUT_S),
                                       "SSH_OPTIONS": " ".join(SSH_OPTIONS), "READY": READY_COMMAND,
                                       "WAIT_FOR_BOOT": WAIT_FOR_BOOT, "RESULT": CLOUD_INIT_RESULT})
        elapsed = time.perf_counter() - started
    finally:
        teardown_s, _ = timed(lambda: remove_labelled(label))
    return {"seconds": elapsed, "destroy_s": teardown_s}


def via_clone(bench: Workbench, size: int) -> dict[str, float]:
    assert bench.git is not None
    label = f"{bench.label}-clone"
    started = time.perf_counter()
    try:
        run_jobs(CLONE_SCRIPT, [[f"clone-{bench.run_id}-{i}"] for i in range(1, size + 1)],
                 {"LABEL": label, "NETWORK": bench.git.network, "IMAGE": bench.image,
                  "URL": bench.git.url, "KEY": str(bench.deploy_key_file)})
        elapsed = time.perf_counter() - started
    finally:
        teardown_s, _ = timed(lambda: remove_labelled(label))
    return {"seconds": elapsed, "destroy_s": teardown_s}


def run(bench: Workbench, sizes: list[int], rounds: int) -> dict[str, Any]:
    measure = {"pulumi up": via_pulumi, "docker script": via_script, "raw Docker PoC": via_clone}
    samples: dict[tuple[int, str], list[dict[str, float]]] = {(s, w): [] for s in sizes for w in WAYS}
    loads = []
    for round_ in range(rounds):
        for size in sizes:
            order = WAYS[round_ % 3:] + WAYS[:round_ % 3]  # each way goes first in some round
            for way in order:
                loads.append(load())
                samples[(size, way)].append(measure[way](bench, size))
                print(f"  provisioning round {round_ + 1}/{rounds}, {size} agents, {way}: "
                      f"{samples[(size, way)][-1]['seconds']:.1f} s", flush=True)
    rows, aims = [], []
    for size in sizes:
        medians = {way: median(s["seconds"] for s in samples[(size, way)]) for way in WAYS}
        for way in WAYS:
            values = [s["seconds"] for s in samples[(size, way)]]
            rows.append({"agents": size, "way": way, "median_s": seconds(medians[way]),
                         "min_s": seconds(min(values)), "max_s": seconds(max(values)),
                         "ratio_to_script": round(medians[way] / medians["docker script"], 2),
                         "ratio_to_poc": round(medians[way] / medians["raw Docker PoC"], 2),
                         "teardown_s": seconds(median(s["destroy_s"] for s in samples[(size, way)]))})
        if size in AIMS:
            baseline, limit = AIMS[size]
            aims.append(aim(f"{size} agent{'s' if size > 1 else ''} SSH-ready: `pulumi up` / {baseline}",
                            medians["pulumi up"] / medians[baseline], limit, "x",
                            f"python -m bench --only provisioning --sizes {size}",
                            f"{medians['pulumi up']:.1f} s / {medians[baseline]:.1f} s"))
    return {"benchmark": "provisioning", "rounds": rounds, "load_1min_median": round(median(loads), 2),
            "ready": f"`{READY_COMMAND}` over SSH (PoC: in the container)", "results": rows, "aims": aims}
