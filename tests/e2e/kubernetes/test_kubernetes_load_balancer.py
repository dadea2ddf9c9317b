"""`service_type: LoadBalancer` on the real test cluster: the agent's endpoint is the address the
cluster's load balancer gives its Service, on port 22.

The test cluster has no cloud, so a STAND-IN for a cloud's load-balancer controller assigns that
address: it writes an unused address of the node's subnet into each LoadBalancer Service's status,
as a cloud controller does once its balancer is ready. Everything after that is real: Pulumi
awaits the address, kube-proxy routes the address to the pod, and the client reaches the agent
there with its pinned host key.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import pytest

from agentfleet import Fleet
from tests.e2e.kubernetes.storage import STORAGE_CLASS, dynamic_storage
from tests.e2e.support import FleetStack
from tests.kubecluster.cluster import Cluster


class LoadBalancerStandIn(threading.Thread):
    """Gives each LoadBalancer Service in `namespace` without an address the next of `addresses`."""

    def __init__(self, cluster: Cluster, namespace: str, addresses: list[str]) -> None:
        super().__init__(daemon=True)
        self.cluster, self.namespace, self.addresses = cluster, namespace, addresses
        self.given: dict[str, str] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            listed = self.cluster.kubectl("get", "services", "-n", self.namespace, "-o", "json", check=False)
            for service in json.loads(listed or '{"items": []}')["items"]:
                name = service["metadata"]["name"]
                if service["spec"]["type"] != "LoadBalancer" or service["status"].get("loadBalancer", {}).get("ingress"):
                    continue
                address = self.given.setdefault(name, self.addresses[len(self.given)])
                self.cluster.kubectl("patch", "service", name, "-n", self.namespace, "--subresource=status",
                                     "--type=merge", "-p",
                                     json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": address}]}}}))


@pytest.fixture(scope="module")
def balanced(kube_cluster: Cluster, make_stack) -> Iterator[tuple[FleetStack, dict, LoadBalancerStandIn]]:
    suffix = uuid.uuid4().hex[:6]
    namespace = f"lb-{suffix}"
    dynamic_storage(kube_cluster)
    octet = kube_cluster.node_ip.split(".")[1]
    # Pods get addresses from .10 up; nothing else uses the top of the node's subnet.
    balancer = LoadBalancerStandIn(kube_cluster, namespace, [f"10.{octet}.0.{250 - n}" for n in range(4)])
    balancer.start()
    stack: FleetStack = make_stack("kube-lb")
    stack.set_fleet({
        "kubernetes": {"kubeconfig": str(kube_cluster.kubeconfig), "namespace": namespace,
                       "service_type": "LoadBalancer", "storage_class": STORAGE_CLASS, "image_pull_policy": "Never"},
        "defaults": {"resources": {"cpus": 0.5, "memory": "256m", "disk": 2}},
        "agents": [{"name": "lb", "backend": "kubernetes", "identity": {"name": "Balanced", "email": "lb@fleet.test"}}],
    })
    try:
        yield stack, stack.up(), balancer
        stack.destroy()
    finally:
        balancer.stopped.set()
        balancer.join()
        kube_cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)


def test_the_endpoint_is_the_load_balancers_address_on_port_22(balanced):
    stack, outputs, balancer = balanced
    agent = outputs["agents"]["lb"]
    assert (agent["host"], agent["port"]) == (balancer.given[f"agentfleet-{stack.name}-lb"], 22)
    assert agent["known_hosts"].startswith(f"{agent['host']} ssh-ed25519 ")
    with Fleet.from_outputs(outputs, stack.name) as client:
        result = client.agent("lb").run("git config user.email; hostname", timeout=60)
    assert result.ok, result.stderr
    assert result.stdout.split() == ["lb@fleet.test", "lb"]
