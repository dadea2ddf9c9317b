"""`backend: kubernetes` through the whole product, on the real test cluster: a fleet mixing a
Kubernetes agent and a Docker agent comes up with `pulumi up` (the real engine and the real
pulumi-kubernetes provider), both answer through the client with their pinned host keys and
their own identities, and `pulumi destroy` leaves nothing in the fleet's namespace."""

from __future__ import annotations

import uuid

import pytest

from agentfleet import Fleet
from tests.e2e.kubernetes.storage import STORAGE_CLASS, static_storage
from tests.e2e.support import FleetStack
from tests.kubecluster.cluster import Cluster


@pytest.fixture(scope="module")
def fleet(kube_cluster: Cluster, make_stack, agent_image):
    suffix = uuid.uuid4().hex[:6]
    namespace = f"fleet-{suffix}"
    static_storage(kube_cluster, f"pv-fleet-{suffix}")
    stack: FleetStack = make_stack("kube")
    stack.set_fleet({
        "kubernetes": {"kubeconfig": str(kube_cluster.kubeconfig), "node_address": kube_cluster.node_ip,
                       "namespace": namespace, "storage_class": STORAGE_CLASS, "image_pull_policy": "Never"},
        "defaults": {"resources": {"cpus": 0.5, "memory": "256m", "pids": 128, "disk": 2}},
        "agents": [
            {"name": "pod", "backend": "kubernetes", "identity": {"name": "Pod Agent", "email": "pod@fleet.test"}},
            {"name": "box", "identity": {"name": "Box Agent", "email": "box@fleet.test"}},
        ],
    })
    outputs = stack.up()
    yield stack, outputs, namespace


def test_both_agents_answer_with_their_identities(fleet, kube_cluster):
    stack, outputs, _ = fleet
    agents = outputs["agents"]
    assert (agents["pod"]["backend"], agents["pod"]["host"]) == ("kubernetes", kube_cluster.node_ip)
    assert agents["box"]["backend"] == "docker"
    with Fleet.from_outputs(outputs, stack.name) as client:
        for name in ("pod", "box"):
            result = client.agent(name).run("git config user.email; id -un; grep NoNewPrivs /proc/self/status",
                                            timeout=60, retries=5)
            assert result.ok, result.stderr
            assert result.stdout.split() == [f"{name}@fleet.test", "agent", "NoNewPrivs:", "1"]


def test_a_second_up_changes_nothing(fleet):
    stack, _, _ = fleet
    preview = stack.stack.preview(on_output=lambda _: None)
    assert set(preview.change_summary) == {"same"}, preview.change_summary


def test_destroy_leaves_nothing_in_the_namespace(fleet, kube_cluster):
    stack, _, namespace = fleet
    stack.destroy()
    left = kube_cluster.kubectl("get", "all,secrets,pvc", "-n", namespace, "-o", "name", check=False)
    assert left.strip() == "" or "not found" in left
