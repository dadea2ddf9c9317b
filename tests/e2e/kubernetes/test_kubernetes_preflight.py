"""The Kubernetes preflight against the real test cluster: each problem it names is real, and a user
confined to one namespace (who may not read namespaces, storage classes or nodes) is not refused
for what it may not look at."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.backends.kubernetes.preflight import cluster_problems
from components.spec import load_fleet
from tests.e2e.kubernetes.storage import STORAGE_CLASS, dynamic_storage
from tests.kubecluster.cluster import Cluster


@pytest.fixture(scope="module")
def namespace(kube_cluster: Cluster):
    name = f"pre-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("create", "namespace", name)
    dynamic_storage(kube_cluster)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def problems(cluster: Cluster, kubeconfig: Path | str, **settings: Any) -> list[str]:
    raw = {"kubernetes": {"kubeconfig": str(kubeconfig), "node_address": cluster.node_ip,
                          "storage_class": STORAGE_CLASS, **settings},
           "agents": [{"name": "a1", "backend": "kubernetes", "identity": {"name": "A", "email": "a@fleet.test"}}]}
    fleet = load_fleet("pre", raw, {}.get)
    return cluster_problems("pre", fleet.host("kubernetes"), list(fleet.agents))


def only(found: list[str], expected: str) -> None:
    assert len(found) == 1 and found[0].startswith('stack "pre": cluster "kubernetes"') and expected in found[0], found


def test_a_usable_cluster_has_no_problems(kube_cluster: Cluster, namespace: str) -> None:
    assert problems(kube_cluster, kube_cluster.kubeconfig, namespace=f"new-{namespace}", image_pull_policy="Never") == []
    assert problems(kube_cluster, kube_cluster.kubeconfig, namespace=namespace, create_namespace=False) == []


def test_a_namespace_the_stack_did_not_make_is_not_adopted(kube_cluster: Cluster, namespace: str) -> None:
    only(problems(kube_cluster, kube_cluster.kubeconfig, namespace=namespace),
         f"namespace {namespace} exists, made by someone else (not this stack); `pulumi destroy` would delete it "
         "with everything in it: set kubernetes.create_namespace: false")


def test_a_missing_namespace_image_and_pull_secret_are_named(kube_cluster: Cluster, namespace: str) -> None:
    only(problems(kube_cluster, kube_cluster.kubeconfig, namespace=f"gone-{namespace}", create_namespace=False),
         f"has no namespace gone-{namespace}; create it, or set kubernetes.create_namespace: true")
    found = problems(kube_cluster, kube_cluster.kubeconfig, namespace=namespace, create_namespace=False,
                     image="agentfleet/agent:not-imported", image_pull_policy="Never", image_pull_secrets=["regcred"])
    assert len(found) == 2, found
    assert "field kubernetes.image_pull_secrets: no secret regcred in namespace" in found[0]
    assert "is Never, but no node has the image agentfleet/agent:not-imported" in found[1]
    only(problems(kube_cluster, kube_cluster.kubeconfig, namespace=f"new-{namespace}", image_pull_secrets=["regcred"]),
         f"field kubernetes.image_pull_secrets: namespace new-{namespace} is still to be made, so it holds no secret")


def test_a_user_confined_to_its_namespace(kube_cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    kube_cluster.kubectl("create", "serviceaccount", "confined", "-n", namespace)
    token = kube_cluster.kubectl("create", "token", "confined", "-n", namespace).strip()
    admin = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    confined = tmp_path / "confined.kubeconfig"
    confined.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
        "users": [{"name": "confined", "user": {"token": token}}],
        "contexts": [{"name": "confined", "context": {"cluster": admin["clusters"][0]["name"], "user": "confined"}}],
        "current-context": "confined",
    }))
    settings = {"namespace": namespace, "create_namespace": False, "image_pull_policy": "Never"}
    only(problems(kube_cluster, confined, **settings),
         f"its kubeconfig may not create secrets, persistentvolumeclaims, deployments.apps, services in namespace "
         f"{namespace}")

    kube_cluster.kubectl("create", "role", "agents", "-n", namespace, "--verb=create,get,list,watch,patch,delete",
                         "--resource=secrets,persistentvolumeclaims,deployments.apps,services")
    kube_cluster.kubectl("create", "rolebinding", "agents", "-n", namespace, "--role=agents",
                         f"--serviceaccount={namespace}:confined")
    assert problems(kube_cluster, confined, **settings) == []
    only(problems(kube_cluster, confined, namespace=namespace), "its kubeconfig may not create namespaces; set "
         f"kubernetes.create_namespace: false to use namespace {namespace} as it is")
