"""Whether a cluster can give agents' pods a user namespace of their own (`hostUsers: false`):
root in the pod is then an unprivileged uid of the node.

Why ask instead of always setting it: an API server without the UserNamespacesSupport feature
drops the field without a word, and a node whose runtime cannot map users refuses to start such
a pod. So the API server must be 1.33 or newer (the feature is on by default from there), and
every node must report, for its default runtime handler, that it supports user namespaces (kubelet
fills `status.runtimeHandlers` from the runtime: containerd 2.0+ or CRI-O 1.25+, with runc 1.2+
or crun 1.9+, on Linux 6.3+ for idmapped mounts of the volumes). Where that fails, the agents run
in the node's user namespace as before, and the preflight's warning says why.
"""

from __future__ import annotations

from typing import Any

MINIMUM_SERVER = (1, 33)
RUNTIMES_NEEDED = "containerd 2.0+ or CRI-O 1.25+, with runc 1.2+ or crun 1.9+, on Linux 6.3+"


def user_namespace_gap(version: tuple[int, int] | None, nodes: list[dict[str, Any]] | None) -> str | None:
    """Why pods on this cluster cannot have their own user namespace, or None when they can.
    `nodes`: the items of `kubectl get nodes -o json`, None when they may not be listed."""
    if version is None:
        return "cannot read the API server's version"
    if version < MINIMUM_SERVER:
        return (f"the API server is Kubernetes {version[0]}.{version[1]}; hostUsers: false needs "
                f"{MINIMUM_SERVER[0]}.{MINIMUM_SERVER[1]}+ (UserNamespacesSupport on by default)")
    if nodes is None:
        return "its kubeconfig may not list nodes, to see whether their runtime supports user namespaces"
    if not nodes:
        return "it has no nodes"
    lacking = [node for node in nodes if not _node_supports(node)]
    if not lacking:
        return None
    described = "; ".join(_describe(node) for node in lacking)
    return f"no user namespace support reported by node {described}; needs {RUNTIMES_NEEDED}"


def _node_supports(node: dict[str, Any]) -> bool:
    handlers = (node.get("status") or {}).get("runtimeHandlers") or []
    return any(handler.get("name", "") == "" and (handler.get("features") or {}).get("userNamespaces") is True
               for handler in handlers)


def _describe(node: dict[str, Any]) -> str:
    info = (node.get("status") or {}).get("nodeInfo") or {}
    return (f"{(node.get('metadata') or {}).get('name', '?')} ({info.get('containerRuntimeVersion', 'runtime unknown')}, "
            f"Linux {info.get('kernelVersion', 'unknown')})")
