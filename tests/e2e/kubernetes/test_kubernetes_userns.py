"""User namespaces for pods on the real test cluster. Its runtime (containerd 1.6 and runc 1.1 from
Debian 12) cannot map users, so: the cluster refuses to start a pod that asks for
`hostUsers: false`, the preflight says why with the versions needed, and an agent falls back to
the node's user namespace, which the outputs, `ls` and `doctor` report."""

from __future__ import annotations

import io
import json
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from agentfleet.cli import main as cli
from components.backends.kubernetes.preflight import cluster_user_namespaces
from components.backends.kubernetes.userns import RUNTIMES_NEEDED
from components.spec import load_fleet
from tests.e2e.kubernetes.test_kubernetes_fleet import cluster_config
from tests.e2e.support import FleetStack
from tests.kubecluster.cluster import Cluster

REFUSED_WITHIN_S = 60


@pytest.fixture(scope="module")
def namespace(kube_cluster: Cluster) -> Iterator[str]:
    name = f"userns-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false", check=False)


def node_runtime(cluster: Cluster) -> tuple[str, str, list]:
    [node] = json.loads(cluster.kubectl("get", "nodes", "-o", "json"))["items"]
    return node["metadata"]["name"], node["status"]["nodeInfo"]["containerRuntimeVersion"], \
        node["status"].get("runtimeHandlers") or []


def test_a_pod_asking_for_its_own_user_namespace_does_not_start_here(kube_cluster: Cluster, namespace: str,
                                                                     agent_image: str) -> None:
    """Why the fallback: this cluster's runtime cannot give a pod a user namespace."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "userns-probe", "namespace": namespace},
           "spec": {"hostUsers": False, "restartPolicy": "Never", "automountServiceAccountToken": False,
                    "containers": [{"name": "probe", "image": agent_image, "imagePullPolicy": "Never",
                                    "command": ["sh", "-c", "cat /proc/self/uid_map"]}]}}
    kube_cluster.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    assert json.loads(kube_cluster.kubectl("get", "pod", "userns-probe", "-n", namespace, "-o", "json"))[
        "spec"].get("hostUsers") is False, "the API server dropped hostUsers (UserNamespacesSupport is off)"
    deadline = time.monotonic() + REFUSED_WITHIN_S
    while True:
        events = kube_cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                                      "involvedObject.name=userns-probe", "-o", "jsonpath={.items[*].message}")
        phase = kube_cluster.kubectl("get", "pod", "userns-probe", "-n", namespace, "-o", "jsonpath={.status.phase}")
        if "user namespace" in events.lower() or phase in ("Succeeded", "Failed") or time.monotonic() > deadline:
            break
        time.sleep(1)
    print(f"\nphase {phase!r}; events: {events}")
    assert phase != "Succeeded", "the pod ran with hostUsers: false: this cluster can do it, fallback tests are moot"
    assert "user namespace" in events.lower(), events


def test_the_preflight_names_the_node_its_runtime_and_what_is_needed(kube_cluster: Cluster) -> None:
    name, runtime, handlers = node_runtime(kube_cluster)
    print(f"\nnode {name}: {runtime}, runtime handlers {handlers}")
    fleet = load_fleet("pre", {"kubernetes": {"kubeconfig": str(kube_cluster.kubeconfig),
                                              "node_address": kube_cluster.node_ip},
                               "agents": [{"name": "a1", "backend": "kubernetes",
                                           "identity": {"name": "A", "email": "a@fleet.test"}}]}, {}.get)
    gap = cluster_user_namespaces(fleet.host("kubernetes"))
    assert gap is not None and gap.startswith(f"no user namespace support reported by node {name} ({runtime}, Linux ")
    assert gap.endswith(f"needs {RUNTIMES_NEEDED}")


def test_an_agent_falls_back_to_the_nodes_user_namespace_and_says_so(kube_cluster: Cluster, namespace: str,
                                                                     make_stack, tmp_path: Path) -> None:
    stack: FleetStack = make_stack("kuserns")
    stack.set_fleet({"kubernetes": cluster_config(kube_cluster, namespace, create_namespace=False),
                     "defaults": {"resources": {"cpus": 0.5, "memory": "256m", "pids": 128, "disk": 2}},
                     "agents": [{"name": "pod", "backend": "kubernetes",
                                 "identity": {"name": "Pod", "email": "pod@fleet.test"}}]})
    said: list[str] = []
    result = stack.stack.up(on_output=said.append)
    warning = [line for line in said if "pods run in the node's user namespace" in line]
    assert warning and f'cluster "kubernetes" (agents pod)' in warning[0] and RUNTIMES_NEEDED in warning[0], said
    outputs = {key: value.value for key, value in result.outputs.items()}
    assert outputs["agents"]["pod"]["user_namespace"] == "none"
    deployment = json.loads(kube_cluster.kubectl("get", "deployments", "-n", namespace, "-o", "json"))["items"][0]
    assert "hostUsers" not in deployment["spec"]["template"]["spec"]
    outputs_file = tmp_path / "outputs.json"
    outputs_file.write_text(json.dumps(outputs))
    out, err = io.StringIO(), io.StringIO()
    assert cli(["--outputs", str(outputs_file), "doctor", "pod"], out, err, {}) == 0, out.getvalue() + err.getvalue()
    assert "  ok    userns        no: root in the pod is its node's root" in out.getvalue(), out.getvalue()
    stack.destroy()
