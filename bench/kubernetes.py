"""Kubernetes: a fleet of agents as pods on the test cluster against the same fleet as Docker
agents on this machine, in one run, interleaved: `pulumi up` until every agent answers git over
SSH, then `pulumi destroy`.

The cluster is the tests' (tests/kubecluster: a single node on a bridge of its own, the agent
image imported into its containerd); its start and the image import are reported on their own
and not counted. It runs through every round of both ways, so its daemons' CPU weighs on both
alike. Each Kubernetes round gets a namespace of its own (the fleet's `kubernetes:` block makes
and removes it); each claim gets its volume from Kubernetes' host-path provisioner (the cluster's
default class, tests/e2e/kubernetes/storage.py), deleted with the claim.

Same agents both ways: no remote (the workspace is a fresh repository with one commit, so
"ready" is `git log -1` in it over SSH, as in bench/hosts.py), the same memory and disk, and the
same CPUs. The Kubernetes backend sets requests equal to limits, so a node fits only its
allocatable CPU's worth of agents: each agent gets the node's CPUs split evenly over the fleet
(at most 1), Docker agents too.

Where the time goes on Kubernetes: seconds from the start of `pulumi up` to the namespace's
creation, then to the last Deployment created, the last pod scheduled, its container started, it
Ready (the readiness probe reached sshd), the last Deployment Available (the rollout Pulumi
awaits), `pulumi up` returning and every agent answering. The Kubernetes timestamps have whole
seconds.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import Workbench, load, median, seconds, stack_endpoints, timed, wait_until_answers
from components.backends.kubernetes.backend import POLICY_CPUS
from tests.e2e.kubernetes.storage import STORAGE_CLASS, dynamic_storage
from tests.kubecluster.cluster import Cluster, remove_tree
from tests.kubecluster.host_state import HostState

WAYS = ("docker", "kubernetes")
PHASES = ("namespace_s", "created_s", "scheduled_s", "started_s", "ready_s", "rollout_s")
READY_TIMEOUT_S = 300
MEMORY = "256m"
DISK_GIB = 2


def millicpus(quantity: str) -> int:
    """A Kubernetes CPU quantity ("2", "1950m", "0.5") in millicores."""
    if quantity.endswith("m"):
        return int(quantity[:-1])
    return round(float(quantity) * 1000)


def cpus_each(allocatable_m: int, agents: int, sidecar_m: int = 0) -> float:
    """The CPUs each of `agents` gets when the node's allocatable CPU is split evenly, at most 1:
    requests equal limits, so more would not schedule. Each pod's policy sidecar (`sidecar_m`,
    a restricted egress policy) takes its part of the pod's share."""
    return min(1.0, (allocatable_m // agents - sidecar_m) / 1000)


def fleet(bench: Workbench, cluster: Cluster, size: int, way: str, namespace: str, cpus: float) -> dict[str, Any]:
    """`size` agents without a remote; on Kubernetes with the fleet's `kubernetes:` block as
    tests/e2e/kubernetes/test_kubernetes_fleet.py has it."""
    config = bench.fleet(size, prefix="k", remote=False)
    config.pop("attach_networks", None)  # the git server's network: no remote, nothing to reach
    config["defaults"]["resources"] = {"cpus": cpus, "memory": MEMORY, "pids": 128, "disk": DISK_GIB}
    if way == "kubernetes":
        config["kubernetes"] = {"kubeconfig": str(cluster.kubeconfig), "node_address": cluster.node_ip,
                                "namespace": namespace, "storage_class": STORAGE_CLASS, "image_pull_policy": "Never"}
        for agent in config["agents"]:
            agent["backend"] = "kubernetes"
    return config


def timeline(objects: dict[str, Any], namespace: str, started: float) -> dict[str, float]:
    """Seconds from `started` (epoch) to the namespace's creation, the last Deployment created,
    the last pod scheduled, started, Ready and the last Deployment Available, from `kubectl get
    namespaces,deployments,pods -n NAMESPACE -o json`."""
    items = objects["items"]

    def at(stamp: str) -> float:
        return datetime.fromisoformat(stamp).timestamp() - started

    def became(item: dict[str, Any], condition: str) -> float:
        return at(next(c["lastTransitionTime"] for c in item["status"]["conditions"]
                       if c["type"] == condition and c["status"] == "True"))

    pods = [item for item in items if item["kind"] == "Pod"]
    deployments = [item for item in items if item["kind"] == "Deployment"]
    space = next(item for item in items if item["kind"] == "Namespace" and item["metadata"]["name"] == namespace)
    if not pods or not deployments:
        raise ValueError(f"namespace {namespace} has {len(pods)} pods and {len(deployments)} deployments")
    return {
        "namespace_s": at(space["metadata"]["creationTimestamp"]),
        "created_s": max(at(deployment["metadata"]["creationTimestamp"]) for deployment in deployments),
        "scheduled_s": max(became(pod, "PodScheduled") for pod in pods),
        "started_s": max(at(status["state"]["running"]["startedAt"])
                         for pod in pods for status in pod["status"]["containerStatuses"]),
        "ready_s": max(became(pod, "Ready") for pod in pods),
        "rollout_s": max(became(deployment, "Available") for deployment in deployments),
    }


def measure(bench: Workbench, cluster: Cluster, size: int, way: str, cpus: float) -> dict[str, float]:
    """One fleet brought up, checked, measured and destroyed."""
    namespace = f"kbench-{uuid.uuid4().hex[:6]}"
    stack, up_s = bench.up("kube" if way == "kubernetes" else "dock", fleet(bench, cluster, size, way, namespace, cpus))
    started = time.time() - up_s
    try:
        check_s = wait_until_answers(stack_endpoints(bench, stack.outputs(), stack.name), READY_TIMEOUT_S)
        sample = {"seconds": up_s + check_s, "up_s": up_s}
        if way == "kubernetes":
            objects = cluster.kubectl("get", "namespaces,deployments,pods", "-n", namespace, "-o", "json")
            sample.update(timeline(json.loads(objects), namespace, started))
        sample["destroy_s"] = timed(lambda: stack.pulumi("destroy", "--yes", "--skip-preview"))[0]
        return sample
    finally:
        bench.discard_stack(stack)


def rows(samples: dict[tuple[int, str], list[dict[str, float]]], sizes: list[int],
         cpus: dict[int, float]) -> list[dict[str, Any]]:
    """A row per size and way: medians, and each way's ratio to Docker; Kubernetes rows add the
    medians of its milestones."""
    table = []
    for size in sizes:
        docker = median(s["seconds"] for s in samples[(size, "docker")])
        docker_destroy = median(s["destroy_s"] for s in samples[(size, "docker")])
        for way in WAYS:
            values = samples[(size, way)]
            ready = median(s["seconds"] for s in values)
            destroy = median(s["destroy_s"] for s in values)
            row: dict[str, Any] = {
                "agents": size, "way": way, "cpus_each": cpus[size], "median_s": seconds(ready),
                "min_s": seconds(min(s["seconds"] for s in values)), "max_s": seconds(max(s["seconds"] for s in values)),
                "vs_docker": round(ready / docker, 2), "up_s": seconds(median(s["up_s"] for s in values)),
                "destroy_s": seconds(destroy), "destroy_vs_docker": round(destroy / docker_destroy, 2),
            }
            if way == "kubernetes":
                row.update({phase: seconds(median(s[phase] for s in values)) for phase in PHASES})
            table.append(row)
    return table


def run(bench: Workbench, sizes: list[int], rounds: int) -> dict[str, Any]:
    before = HostState.capture()
    root = Path(tempfile.mkdtemp(prefix="afk-"))  # short: kubelet's unix sockets live under it
    cluster = Cluster(root, image=bench.image)
    samples: dict[tuple[int, str], list[dict[str, float]]] = {(s, w): [] for s in sizes for w in WAYS}
    loads = []
    try:
        with cluster:
            print(f"  cluster up in {cluster.timings['start_s']:.1f} s "
                  f"(image import {cluster.timings.get('image_import_s', 0):.1f} s)", flush=True)
            dynamic_storage(cluster)
            allocatable = millicpus(cluster.kubectl("get", "nodes", "-o", "jsonpath={.items[0].status.allocatable.cpu}"))
            cpus = {size: cpus_each(allocatable, size, millicpus(POLICY_CPUS)) for size in sizes}
            for round_ in range(rounds):
                for size in sizes:
                    for way in (WAYS if round_ % 2 == 0 else WAYS[::-1]):  # each way goes first in some round
                        loads.append(load())
                        samples[(size, way)].append(measure(bench, cluster, size, way, cpus[size]))
                        sample = samples[(size, way)][-1]
                        print(f"  kubernetes round {round_ + 1}/{rounds}, {size} agents, {way}: {sample['seconds']:.1f} s "
                              f"(destroy {sample['destroy_s']:.1f} s)", flush=True)
    finally:
        remove_tree(root)
    changed = before.differences(HostState.capture())
    return {
        "benchmark": "kubernetes", "rounds": rounds, "load_1min_median": round(median(loads), 2),
        "ready": "`git -C workspace log -1` over SSH (no remote: a fresh repository)",
        "phases": "kubernetes rows: seconds from the start of `pulumi up` to the namespace created, the last "
                  "Deployment created, the last pod scheduled, started, Ready, the last Deployment Available "
                  "(whole-second timestamps)",
        "node_allocatable_cpu_m": allocatable,
        "cluster_start_s": seconds(cluster.timings["start_s"]),
        "image_import_s": seconds(cluster.timings.get("image_import_s", 0)),
        "cluster_stop_s": seconds(cluster.timings["stop_s"]),
        "host_left_as_found": not changed, **({"host_changes": changed[:10]} if changed else {}),
        "results": rows(samples, sizes, cpus),
    }
