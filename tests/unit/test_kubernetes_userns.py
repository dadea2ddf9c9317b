"""components/backends/kubernetes/userns.py and the pod spec it shapes: whether a cluster can give
agents' pods a user namespace of their own (`hostUsers: false`), judged from the API server's
version and what `kubectl get nodes` says, without a cluster."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from components.backends.kubernetes.backend import pod_spec
from components.backends.kubernetes.userns import user_namespace_gap
from tests.unit.test_kubernetes_backend import args

NEEDED = "needs containerd 2.0+ or CRI-O 1.25+, with runc 1.2+ or crun 1.9+, on Linux 6.3+"


def node(name: str, user_namespaces: bool | None, runtime: str = "containerd://2.1.4") -> dict[str, Any]:
    """A node as `kubectl get nodes -o json` lists it; None: its runtime reports no handlers."""
    status: dict[str, Any] = {"nodeInfo": {"containerRuntimeVersion": runtime, "kernelVersion": "6.8.0"}}
    if user_namespaces is not None:
        status["runtimeHandlers"] = [{"name": "", "features": {"recursiveReadOnlyMounts": True,
                                                               "userNamespaces": user_namespaces}},
                                     {"name": "runc", "features": {"userNamespaces": user_namespaces}}]
    return {"metadata": {"name": name}, "status": status}


def test_a_new_cluster_whose_nodes_all_support_it_has_no_gap():
    assert user_namespace_gap((1, 34), [node("a", True), node("b", True)]) is None


def test_an_older_api_server_is_named_with_the_version_needed():
    assert user_namespace_gap((1, 32), [node("a", True)]) == (
        "the API server is Kubernetes 1.32; hostUsers: false needs 1.33+ (UserNamespacesSupport on by default)")


def test_nodes_whose_runtime_cannot_are_named_with_runtime_and_kernel():
    gap = user_namespace_gap((1, 34), [node("a", True), node("b", None, "containerd://1.6.20"), node("c", False)])
    assert gap == ("no user namespace support reported by node b (containerd://1.6.20, Linux 6.8.0); "
                   f"c (containerd://2.1.4, Linux 6.8.0); {NEEDED}")


def test_only_the_default_runtime_handler_counts():
    other_only = node("a", True)
    other_only["status"]["runtimeHandlers"] = [{"name": "kata", "features": {"userNamespaces": True}}]
    assert user_namespace_gap((1, 34), [other_only]) is not None


def test_what_cannot_be_seen_is_not_taken_as_support():
    assert user_namespace_gap(None, [node("a", True)]) == "cannot read the API server's version"
    assert "may not list nodes" in user_namespace_gap((1, 34), None)
    assert user_namespace_gap((1, 34), []) == "it has no nodes"


def test_the_pod_asks_for_its_own_user_namespace_only_where_the_cluster_supports_it():
    assert pod_spec(args(), "seed", "claim").get("hostUsers") is None
    assert pod_spec(replace(args(), user_namespace=True), "seed", "claim")["hostUsers"] is False
