"""What `up` checks on each cluster before it creates anything: the cluster answers, the namespace
is there (or may be made), the objects of an agent may be made in it, the storage class exists,
the pull secrets exist, an image that must not be pulled is on a node, and the cluster runs the
native sidecar containers that keep a restricted egress policy out of the agent's reach. Apart from
those, whether the cluster can give pods a user namespace of their own (userns.py): a warning, not
a refusal.

Each problem names the stack, the cluster host, its agents and the config field to change. The
checks are kubectl calls (the kubectl setup builds, matching the cluster binaries), made side by
side: a preflight runs on every preview and up.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from components.backends.kubernetes.userns import user_namespace_gap
from components.image import agent_image_tag
from components.process import Completed, run, tail
from components.spec import FLEET_CLUSTER, AgentSpec, ClusterSpec, HostSpec

# What provision() makes in the namespace, as `kubectl auth can-i` names them.
AGENT_OBJECTS = ("secrets", "persistentvolumeclaims", "deployments.apps", "services")
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
NODE_IMAGES_LISTED = 50  # kubelet's default nodeStatusMaxImages
# On what a stack makes (backend.py): its objects and its namespace.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
NAMESPACE_STACK_LABEL = "agentfleet.dev/stack"
# Native sidecars (init containers with restartPolicy: Always) are on by default from 1.29 (beta).
SIDECARS_SINCE = (1, 29)


def kubectl() -> Optional[str]:
    """The kubectl setup builds (matching the cluster binaries), else PATH's."""
    built = Path(os.environ.get("AGENTFLEET_HOME") or Path.home() / ".agentfleet") / "kubernetes" / "current" / "bin" / "kubectl"
    return str(built) if os.access(built, os.X_OK) else shutil.which("kubectl")


def cluster_image(cluster: ClusterSpec, agent: AgentSpec) -> str:
    return cluster.image or agent.image or agent_image_tag()


def cluster_field(host: HostSpec, key: str) -> str:
    """The config field of a cluster setting, as the user wrote it."""
    return f"kubernetes.{key}" if host.name == FLEET_CLUSTER else f"hosts.{host.name}.kubernetes.{key}"


def canonical_image(reference: str) -> str:
    """An image reference as a node's runtime lists it: registry, repository and tag in full
    (`agentfleet/agent:x` is `docker.io/agentfleet/agent:x`)."""
    first, slash, _ = reference.partition("/")
    if not slash:
        reference = f"docker.io/library/{reference}"
    elif "." not in first and ":" not in first and first != "localhost":
        reference = f"docker.io/{reference}"
    last = reference.rsplit("/", 1)[-1]
    return reference if ":" in last or "@" in last else f"{reference}:latest"


def cluster_problems(stack: str, host: HostSpec, agents: list[AgentSpec]) -> list[str]:
    """Why the agents placed on this cluster host cannot be made there (empty: they can)."""
    cluster = host.cluster
    assert cluster is not None
    where = (f'stack "{stack}": cluster "{host.name}" ({cluster.kubeconfig}'
             + (f", context {cluster.context}" if cluster.context else "")
             + f") (agents {', '.join(a.name for a in agents)})")
    config = Path(cluster.kubeconfig).expanduser()
    if not config.is_file():
        return [f"{where}: field {cluster_field(host, 'kubeconfig')}: no file {config}"]
    call = kubectl_on(cluster)
    ready = call("get", "--raw", "/readyz")
    if not ready.ok:
        return [f"{where}: does not answer ({tail(ready.stderr or ready.stdout, 2)})"]
    namespace = cluster.namespace
    calls = {
        "namespace": ("get", "namespace", namespace, "-o", "json"),
        "create namespaces": ("auth", "can-i", "create", "namespaces"),
        "storage classes": ("get", "storageclass", "-o", "json"),
        "nodes": ("get", "nodes", "-o", "json"),
        "version": ("get", "--raw", "/version"),
        **{f"create {kind}": ("auth", "can-i", "create", kind, "--namespace", namespace) for kind in AGENT_OBJECTS},
        **{f"secret {name}": ("get", "secret", name, "--namespace", namespace, "-o", "name")
           for name in cluster.image_pull_secrets},
    }
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        done = dict(zip(calls, pool.map(lambda argv: call(*argv), calls.values())))

    problems = _namespace_problems(where, stack, host, cluster, done["namespace"], done["create namespaces"])
    denied = [kind for kind in AGENT_OBJECTS if not _says_yes(done[f"create {kind}"])]
    if denied:
        problems.append(f"{where}: its kubeconfig may not create {', '.join(denied)} in namespace {namespace}; "
                        "grant them (a Role bound to its user) or use a kubeconfig that may")
    problems += _storage_problems(where, host, cluster, done["storage classes"])
    pull_secrets = cluster_field(host, "image_pull_secrets")
    if done["namespace"].ok or _forbidden(done["namespace"]):
        problems += [f"{where}: field {pull_secrets}: no secret {name} in namespace {namespace}; create it "
                     f"(`kubectl create secret docker-registry {name} ...`)"
                     for name in cluster.image_pull_secrets
                     if not done[f"secret {name}"].ok and not _forbidden(done[f"secret {name}"])]
    elif cluster.image_pull_secrets and cluster.create_namespace:
        problems.append(f"{where}: field {pull_secrets}: namespace {namespace} is still to be made, so it holds no "
                        f"secret; create the namespace and its secrets, then set "
                        f"{cluster_field(host, 'create_namespace')}: false")
    if cluster.image_pull_policy == "Never":
        problems += _image_problems(where, host, cluster, agents, done["nodes"])
    return problems + _sidecar_problems(where, agents, done["version"])


def server_version(said: str) -> Optional[tuple[int, int]]:
    """(major, minor) from the API server's /version; None when it does not say (minor may read
    "29+" on some distributions)."""
    try:
        version = json.loads(said)
        return int(version["major"].rstrip("+")), int(version["minor"].rstrip("+"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _sidecar_problems(where: str, agents: list[AgentSpec], said: Completed) -> list[str]:
    """A restricted egress policy runs in a native sidecar of the agent's pod (backend.py)."""
    restricted = [agent.name for agent in agents if agent.egress != "open"]
    version = server_version(said.stdout) if said.ok else None
    if not restricted or version is None or version >= SIDECARS_SINCE:
        return []
    return [f"{where}: runs Kubernetes {version[0]}.{version[1]}; the egress policy of agents "
            f"{', '.join(restricted)} runs in a native sidecar container, which needs Kubernetes "
            f"{SIDECARS_SINCE[0]}.{SIDECARS_SINCE[1]} or later: upgrade the cluster, or set `egress: open` for them"]


def kubectl_on(cluster: ClusterSpec) -> Callable[..., Completed]:
    """kubectl with the cluster's kubeconfig and context, its calls bounded in time."""
    base = [kubectl() or "kubectl", "--kubeconfig", str(Path(cluster.kubeconfig).expanduser()),
            "--request-timeout", "10s", *(["--context", cluster.context] if cluster.context else [])]

    def call(*argv: str) -> Completed:
        return run([*base, *argv], timeout_s=30)

    return call


def cluster_user_namespaces(host: HostSpec) -> str | None:
    """Why the cluster's pods cannot have a user namespace of their own (userns.py), or None."""
    assert host.cluster is not None
    call = kubectl_on(host.cluster)
    with ThreadPoolExecutor(max_workers=2) as pool:
        version, nodes = pool.map(lambda argv: call(*argv), [("get", "--raw", "/version"), ("get", "nodes", "-o", "json")])
    listed = json.loads(nodes.stdout)["items"] if nodes.ok else None
    return user_namespace_gap(server_version(version.stdout) if version.ok else None, listed)


def _namespace_problems(where: str, stack: str, host: HostSpec, cluster: ClusterSpec, found: Completed,
                        may_create: Completed) -> list[str]:
    """The namespace is there to use, or the stack may make it; one the stack would make must not
    be somebody else's (destroy deletes the namespace it made, and everything in it)."""
    namespace, create = cluster.namespace, cluster_field(host, "create_namespace")
    if found.ok:
        labels = json.loads(found.stdout)["metadata"].get("labels") or {}
        owner = labels.get(NAMESPACE_STACK_LABEL)
        # Namespaces made before stacks labelled theirs carry agentfleet's mark only.
        ours = owner == stack or (owner is None and labels.get(MANAGED_BY_LABEL) == "agentfleet")
        if cluster.create_namespace and not ours:
            whose = f'stack "{owner}"' if owner else "someone else (not this stack)"
            return [f"{where}: namespace {namespace} exists, made by {whose}; `pulumi destroy` would delete it with "
                    f"everything in it: set {create}: false to use it as it is, or "
                    f"{cluster_field(host, 'namespace')} to a new one"]
        return []
    if _forbidden(found):
        # A namespace-scoped user may not read namespaces: use it as it is, or be told it cannot make it.
        if cluster.create_namespace and not _says_yes(may_create):
            return [f"{where}: its kubeconfig may not create namespaces; set {create}: false to use namespace "
                    f"{namespace} as it is"]
        return []
    if not cluster.create_namespace:
        return [f"{where}: has no namespace {namespace}; create it, or set {create}: true"]
    if not _says_yes(may_create):
        return [f"{where}: has no namespace {namespace}, and its kubeconfig may not create one; create it, or set "
                f"{cluster_field(host, 'namespace')} to one it may use"]
    return []


def _forbidden(done: Completed) -> bool:
    """kubectl failed because the user may not make that call (not because the object is missing)."""
    return "(Forbidden)" in done.stderr


def _says_yes(done: Completed) -> bool:
    return done.ok and done.stdout.strip() == "yes"


def _storage_problems(where: str, host: HostSpec, cluster: ClusterSpec, listed: Completed) -> list[str]:
    """The class the workspaces are claimed from exists (or the cluster has a default one); not
    judged for a user who may not list classes."""
    if _forbidden(listed):
        return []
    if not listed.ok:
        return [f"{where}: cannot list storage classes ({tail(listed.stderr, 2)})"]
    classes = json.loads(listed.stdout)["items"]
    names = sorted(item["metadata"]["name"] for item in classes)
    if cluster.storage_class is not None:
        if cluster.storage_class in names:
            return []
        return [f"{where}: field {cluster_field(host, 'storage_class')}: no storage class {cluster.storage_class}; "
                f"use one of {', '.join(names) or '(the cluster has none)'}"]
    if any((item["metadata"].get("annotations") or {}).get(DEFAULT_CLASS) == "true" for item in classes):
        return []
    return [f"{where}: has no default storage class for the agents' workspaces; set "
            f"{cluster_field(host, 'storage_class')} to one of {', '.join(names) or '(the cluster has none)'}"]


def _image_problems(where: str, host: HostSpec, cluster: ClusterSpec, agents: list[AgentSpec],
                    nodes: Completed) -> list[str]:
    """With `image_pull_policy: Never`, the image must already be on a node. A node lists its
    largest images only (kubelet's nodeStatusMaxImages, 50 by default): a full list proves nothing."""
    if _forbidden(nodes):
        return []  # not judged for a user who may not list nodes
    if not nodes.ok:
        return [f"{where}: cannot list nodes to find the agent image ({tail(nodes.stderr, 2)})"]
    listed = [node.get("status", {}).get("images", []) for node in json.loads(nodes.stdout)["items"]]
    if any(len(images) >= NODE_IMAGES_LISTED for images in listed):
        return []
    present = {name for images in listed for image in images for name in image.get("names", [])}
    images = sorted({cluster_image(cluster, agent) for agent in agents})
    missing = [image for image in images if canonical_image(image) not in present]
    return [f"{where}: field {cluster_field(host, 'image_pull_policy')} is Never, but no node has the image {image}; "
            "import it into the nodes' runtime (e.g. `docker save IMAGE | ctr -n k8s.io images import -`) "
            "or let the nodes pull it (IfNotPresent, with a registry)" for image in missing]
