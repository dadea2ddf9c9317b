"""Three clusters as hosts of one fleet, under Pulumi mocks: one Provider and namespace per cluster,
each agent's objects on its own cluster's Provider, its endpoint on that cluster's node address or
load balancer."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pulumi
import pytest
import yaml

from components.cloudinit import shared_files
from components.spec import load_fleet
from tests.unit.fleet_mocks import FleetMocks, mocks_for_module


LOAD_BALANCER = "203.0.113.5"
SECRET_SIG, SECRET_SIG_VALUE = pulumi.runtime.rpc._special_sig_key, pulumi.runtime.rpc._special_secret_sig
MIRROR = "registry.example.com/agentfleet/agent:mirror"  # a copy in a registry, of a version unknown here


class ClusterMocks(FleetMocks):
    """Services get the node port the API server would assign, and LoadBalancer Services the
    address a cloud's load balancer controller would."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        name, outputs = super().new_resource(args)
        if args.typ == "kubernetes:core/v1:Service":
            outputs["spec"] = {**outputs["spec"], "ports": [{**outputs["spec"]["ports"][0], "nodePort": 30022}]}
            if outputs["spec"]["type"] == "LoadBalancer":
                outputs["status"] = {"loadBalancer": {"ingress": [{"ip": LOAD_BALANCER}]}}
        return name, outputs


MOCKS = ClusterMocks()
# Read by the program (its content becomes the Provider's secret kubeconfig); mocks never parse it.
KUBECONFIGS = Path(tempfile.mkdtemp(prefix="kubeconfigs-"))
for cluster in ("home", "east", "edge"):
    (KUBECONFIGS / cluster).write_text(f"# {cluster}\n")

SPEC = load_fleet("two", {
    "kubernetes": {"kubeconfig": str(KUBECONFIGS / "home"), "node_address": "192.0.2.10"},
    "hosts": {"east": {"kubernetes": {"kubeconfig": str(KUBECONFIGS / "east"), "node_address": "198.51.100.7",
                                      "namespace": "agents", "create_namespace": False}},
              "edge": {"kubernetes": {"kubeconfig": str(KUBECONFIGS / "edge"), "service_type": "LoadBalancer",
                                      "image": MIRROR}}},
    "agents": [
        {"name": "home-1", "backend": "kubernetes", "host": "kubernetes", "identity": {"name": "H", "email": "h@x.io"}},
        {"name": "east-1", "backend": "kubernetes", "host": "east", "identity": {"name": "E", "email": "e@x.io"}},
        {"name": "edge-1", "backend": "kubernetes", "host": "edge", "identity": {"name": "G", "email": "g@x.io"}},
    ],
}, {}.get)


@pytest.fixture(scope="module")
def agents() -> dict:
    """Runs the fleet program to its end under the mocks; its agents' outputs."""
    from components.fleet import Fleet, FleetArgs

    made: dict = {}
    mocks = mocks_for_module(MOCKS, "two")
    next(mocks)
    pulumi.runtime.test(lambda: Fleet("fleet", FleetArgs(SPEC)).agents.apply(made.update))()
    next(mocks, None)
    return made


def test_each_agent_answers_on_its_own_clusters_node(agents: dict) -> None:
    assert (agents["home-1"]["host"], agents["east-1"]["host"]) == ("192.0.2.10", "198.51.100.7")
    assert agents["home-1"]["port"] == agents["east-1"]["port"] == 30022
    # Behind a load balancer: its address, sshd's own port (so known_hosts names the bare address).
    assert (agents["edge-1"]["host"], agents["edge-1"]["port"]) == (LOAD_BALANCER, 22)
    assert agents["edge-1"]["known_hosts"].startswith(f"{LOAD_BALANCER} ssh-ed25519 ")


def test_one_provider_per_cluster_and_each_agent_on_its_own(agents: dict) -> None:
    def named(kind: str) -> set[str]:
        return {name for name, args in MOCKS.resources.items() if args.typ == kind}

    assert named("pulumi:providers:kubernetes") == {"fleet-cluster", "fleet-cluster-east", "fleet-cluster-edge"}
    # Namespaces are made unless a cluster says to use its own as it is (east).
    assert named("kubernetes:core/v1:Namespace") == {"fleet-namespace", "fleet-namespace-edge"}
    for agent, provider in (("home-1", "fleet-cluster"), ("east-1", "fleet-cluster-east"),
                            ("edge-1", "fleet-cluster-edge")):
        for part in ("seed", "workspace", "pod", "ssh"):
            assert f"::{provider}::" in MOCKS.resources[f"{agent}-{part}"].provider, (agent, part)
    assert MOCKS.resources["east-1-pod"].inputs["metadata"]["namespace"] == "agents"


def test_a_pod_on_this_recipes_image_leaves_the_shared_files_to_the_image(agents: dict) -> None:
    """The seed Secret (and so the state) carries the hooks and the first-clone script only where
    the pod may run another image than the one this recipe builds."""
    def written(agent: str) -> set[str]:
        data = MOCKS.resources[f"{agent}-seed"].inputs["stringData"]
        assert data[SECRET_SIG] == SECRET_SIG_VALUE  # a secret as a whole
        document = yaml.safe_load(data["value"]["user-data"])
        return {entry["path"] for entry in document["write_files"]}

    shared = {entry["path"] for entry in shared_files()}
    assert MOCKS.resources["edge-1-pod"].inputs["spec"]["template"]["spec"]["containers"][0]["image"] == MIRROR
    assert shared <= written("edge-1")
    assert not shared & written("home-1") and not shared & written("east-1")
