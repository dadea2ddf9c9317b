"""Hosts and placement in the fleet config: Docker engines and Kubernetes clusters, what each
agent may name, where each agent goes, and the errors that name the field to change."""

from __future__ import annotations

from typing import Any

import pytest

from components.backends.kubernetes.preflight import canonical_image, cluster_field
from components.spec import FLEET_CLUSTER, LOCAL_HOST, FleetConfigError, load_fleet
from components.keys import generate_ed25519

CLUSTER = {"kubeconfig": "~/.kube/config", "node_address": "192.0.2.10"}
ENGINE = {"address": "ssh://ops@192.0.2.20", "known_hosts": [f"192.0.2.20 {generate_ed25519('h')[1]}"]}


def agent(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "identity": {"name": name.title(), "email": f"{name}@example.com"}, **fields}


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(FleetConfigError) as error:
        load_fleet("dev", raw, {}.get)
    return error.value.problems


def test_the_fleet_cluster_is_a_host_named_kubernetes() -> None:
    fleet = load_fleet("dev", {"kubernetes": CLUSTER, "agents": [agent("pod", backend="kubernetes"), agent("box")]},
                       {}.get)
    pod, box = fleet.agents
    assert (fleet.placement(pod), fleet.placement(box)) == (FLEET_CLUSTER, LOCAL_HOST)
    cluster = fleet.host(FLEET_CLUSTER).cluster
    assert cluster is not None and (cluster.namespace, cluster.node_address) == ("agentfleet-dev", "192.0.2.10")


def test_cluster_hosts_take_their_agents_and_docker_placement_skips_them() -> None:
    many = [agent(f"a{index}") for index in range(40)]
    fleet = load_fleet("dev", {
        "hosts": {"east": {"kubernetes": {**CLUSTER, "namespace": "agents", "image_pull_secrets": ["regcred"]}},
                  "west": {"kubernetes": {**CLUSTER, "kubeconfig": "/etc/west.yaml"}}, "box": ENGINE},
        "agents": [agent("p1", backend="kubernetes", host="east"), agent("p2", backend="kubernetes", host="west"),
                   *many],
    }, {}.get)
    assert [fleet.placement(a) for a in fleet.agents[:2]] == ["east", "west"]
    assert {fleet.placement(a) for a in fleet.agents[2:]} == {LOCAL_HOST, "box"}
    assert [h.name for h in fleet.hosts_for("kubernetes")] == ["east", "west"]
    assert fleet.host("east").cluster.image_pull_secrets == ("regcred",)


def test_vms_are_placed_on_this_machine_whatever_the_hosts() -> None:
    fleet = load_fleet("dev", {"hosts": {"box": ENGINE}, "agents": [
        agent(f"vm{index}", backend="lima") for index in range(8)]}, {}.get)
    assert {fleet.placement(a) for a in fleet.agents} == {LOCAL_HOST}


def test_adding_a_cluster_moves_no_docker_agent() -> None:
    agents = [agent(f"a{index}") for index in range(40)]
    before = load_fleet("dev", {"hosts": {"box": ENGINE}, "agents": agents}, {}.get)
    after = load_fleet("dev", {"hosts": {"box": ENGINE, "east": {"kubernetes": CLUSTER}}, "agents": agents}, {}.get)
    assert [before.placement(a) for a in before.agents] == [after.placement(a) for a in after.agents]


@pytest.mark.parametrize(("raw", "expected"), [
    ({"agents": [agent("pod", backend="kubernetes")]},
     'field "kubernetes": agents pod have backend kubernetes, but the fleet names no cluster'),
    ({"kubernetes": CLUSTER, "hosts": {"east": {"kubernetes": {**CLUSTER, "namespace": "other"}}},
      "agents": [agent("pod", backend="kubernetes")]},
     'agent "pod", field "host": the fleet has clusters kubernetes, east; set `host` to the one this agent runs on'),
    ({"kubernetes": CLUSTER, "agents": [agent("pod", backend="kubernetes", host="local")]},
     "host 'local' is a Docker engine; a kubernetes agent runs on a cluster (clusters: kubernetes;"),
    ({"kubernetes": CLUSTER, "agents": [agent("box", host="kubernetes")]},
     "host 'kubernetes' is a Kubernetes cluster; set `backend: kubernetes` to run this agent there as a pod, "
     "or name a Docker host (local)"),
    ({"hosts": {"box": ENGINE}, "agents": [agent("vm", backend="lima", host="box")]},
     "lima VMs run on this machine only; remove `host` or set it to 'local'"),
    ({"kubernetes": CLUSTER, "hosts": {"kubernetes": ENGINE}, "agents": [agent("a")]},
     "field \"hosts.kubernetes\": 'kubernetes' is the host name of the fleet's `kubernetes:` cluster"),
    ({"kubernetes": CLUSTER, "hosts": {"twin": {"kubernetes": CLUSTER}}, "agents": [agent("a")]},
     "field \"hosts.twin\": is the same cluster and namespace as host 'kubernetes'; give one of them another `namespace`"),
    ({"hosts": {"east": {"kubernetes": {**CLUSTER, "node_address": "east.example"}}}, "agents": [agent("a")]},
     "field \"hosts.east.kubernetes.node_address\": 'east.example' is not the IPv4 address"),
    ({"hosts": {"east": {"kubernetes": CLUSTER, "address": "ssh://a@b"}}, "agents": [agent("a")]},
     'field "hosts.east.address"'),
    ({"kubernetes": {**CLUSTER, "image_pull_secrets": "regcred"}, "agents": [agent("a")]},
     'field "kubernetes.image_pull_secrets": must be a list of Secret names in the namespace'),
    ({"kubernetes": {**CLUSTER, "service_type": "LoadBalancer"}, "agents": [agent("a")]},
     'field "kubernetes.node_address": is for NodePort services; with service_type LoadBalancer'),
    ({"kubernetes": {"kubeconfig": "k", "service_type": "ClusterIP"}, "agents": [agent("a")]},
     "field \"kubernetes.service_type\": 'ClusterIP'; use NodePort"),
    ({"kubernetes": {**CLUSTER, "namespace": "Agents"}, "agents": [agent("a")]},
     "field \"kubernetes.namespace\": 'Agents' is not a namespace name"),
])
def test_misplaced_agents_and_bad_clusters_name_the_field(raw: dict[str, Any], expected: str) -> None:
    found = problems(raw)
    assert any(expected in problem for problem in found), found
    assert all(problem.startswith('stack "dev"') for problem in found)


@pytest.mark.parametrize(("reference", "canonical"), [
    ("agentfleet/agent:515ff7351637", "docker.io/agentfleet/agent:515ff7351637"),
    ("debian", "docker.io/library/debian:latest"),
    ("registry.example.com:5000/team/agent", "registry.example.com:5000/team/agent:latest"),
    ("localhost/agent:1", "localhost/agent:1"),
    ("ghcr.io/acme/agent@sha256:" + "0" * 64, "ghcr.io/acme/agent@sha256:" + "0" * 64),
])
def test_image_references_compare_as_nodes_list_them(reference: str, canonical: str) -> None:
    assert canonical_image(reference) == canonical


def test_cluster_fields_are_named_as_written() -> None:
    fleet = load_fleet("dev", {"kubernetes": CLUSTER, "hosts": {"east": {"kubernetes": {**CLUSTER, "namespace": "e"}}},
                               "agents": [agent("a")]}, {}.get)
    assert cluster_field(fleet.host(FLEET_CLUSTER), "storage_class") == "kubernetes.storage_class"
    assert cluster_field(fleet.host("east"), "storage_class") == "hosts.east.kubernetes.storage_class"
