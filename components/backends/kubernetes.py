"""How one agent becomes a pod on a Kubernetes cluster, through the pulumi-kubernetes provider.

Why this shape:
- A Deployment of one that recreates (never two pods on one workspace), not a bare Pod: a pod
  deleted out of band comes back by itself, with the same workspace (the PersistentVolumeClaim,
  a resource of its own so that `retain_workspace` can keep it through `pulumi destroy`) and the
  same endpoint (the Service's node port does not change with the pod). Not a StatefulSet: it
  names the pod's host `<name>-0`, where a Deployment's pod keeps the agent's name as its
  hostname, as in Docker.
- The cloud-config is a Secret mounted where the image's init waits for a NoCloud seed
  (/var/lib/cloud/seed/nocloud: user-data and meta-data). It is never in the pod spec, the
  environment, annotations or labels, and Pulumi keeps it as a secret.
- The same least privilege as Docker (components/backends/docker.py): every capability dropped
  but the ones sshd and cloud-init need (plus NET_ADMIN to apply a restricted egress policy at
  boot), no privilege escalation, the runtime's default seccomp profile, CPU and memory limits
  from the spec, no service-account token and no service links in the pod; like Docker, the
  pod lets sshd bind port 22 without CAP_NET_BIND_SERVICE (net.ipv4.ip_unprivileged_port_start).
- Ready means the pod's readiness probe reached sshd, which agent-init starts only after
  cloud-init; Pulumi awaits the Deployment's rollout itself.

One agent's objects come from `KubernetesAgentArgs`; `KubernetesBackend` reads the fleet's
`kubernetes:` config (spec.ClusterSpec) into them, makes the cluster's Provider and namespace, and
checks the cluster before anything is created.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from agentfleet.contract import WORKSPACE as WORKSPACE_MOUNT
from components.backends import Endpoint, MachineContext
from components.backends.docker import capabilities
from components.image import agent_image_tag
from components.process import run, tail
from components.spec import AgentSpec, FleetSpec

SEED_MOUNT = "/var/lib/cloud/seed/nocloud"  # images/agent-init, images/agentfleet-cloud-init
SSH_PORT = 22
READINESS_PERIOD_S = 2
# A Deployment's pods are named <name>-<10 hex>-<5 chars>, within 63 characters.
NAME_MAX = 47


@dataclass(frozen=True)
class KubernetesAgentArgs:
    """One agent on one cluster: the agent's spec and where and how it runs there."""

    agent: AgentSpec
    stack: str
    namespace: str
    image: str
    node_address: str  # the address operators reach the cluster's node ports on
    image_pull_policy: str = "IfNotPresent"
    storage_class: Optional[str] = None
    service_type: str = "NodePort"

    @property
    def machine_name(self) -> str:
        """The name of the agent's objects: unique per stack, a valid DNS label."""
        name = re.sub(r"[^a-z0-9-]+", "-", f"agentfleet-{self.stack}-{self.agent.name}".lower())
        return name[:NAME_MAX].rstrip("-")

    @property
    def labels(self) -> dict[str, str]:
        """Selects the agent's pod; no value here is secret."""
        return {"app.kubernetes.io/managed-by": "agentfleet", "agentfleet.dev/stack": self.stack,
                "agentfleet.dev/agent": self.agent.name}


def meta_data(args: KubernetesAgentArgs) -> str:
    """NoCloud meta-data, as images/agentfleet-seed writes it for Docker agents."""
    return f"instance-id: {args.machine_name}\nlocal-hostname: {args.agent.name}\n"


def container_spec(args: KubernetesAgentArgs, seed_volume: str, workspace_volume: str) -> dict[str, Any]:
    agent = args.agent
    limits = {"cpu": f"{agent.resources.cpus:g}", "memory": f"{agent.resources.memory_mib}Mi"}
    return {
        "name": "agent",
        "image": args.image,
        "imagePullPolicy": args.image_pull_policy,
        "ports": [{"name": "ssh", "containerPort": SSH_PORT}],
        "volumeMounts": [
            {"name": seed_volume, "mountPath": SEED_MOUNT, "readOnly": True},
            {"name": workspace_volume, "mountPath": WORKSPACE_MOUNT},
        ],
        "resources": {"requests": limits, "limits": limits},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"], "add": list(capabilities(agent))},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "readinessProbe": {"tcpSocket": {"port": SSH_PORT}, "periodSeconds": READINESS_PERIOD_S},
    }


def pod_spec(args: KubernetesAgentArgs, seed_secret: pulumi.Input[str], claim: str) -> dict[str, Any]:
    return {
        "hostname": args.agent.name,
        # As Docker does for its containers: sshd binds port 22 without CAP_NET_BIND_SERVICE.
        "securityContext": {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": [container_spec(args, "seed", "workspace")],
        "volumes": [
            {"name": "seed", "secret": {"secretName": seed_secret, "defaultMode": 0o400}},
            {"name": "workspace", "persistentVolumeClaim": {"claimName": claim}},
        ],
    }


def provision(args: KubernetesAgentArgs, user_data: pulumi.Input[str],
              opts: pulumi.ResourceOptions) -> pulumi.Output[dict[str, Any]]:
    """The seed Secret, workspace claim, Deployment of one and Service of one agent; returns the
    endpoint ({host, port}) its sshd answers on. `opts` carries the kubernetes Provider."""
    name, agent = args.machine_name, args.agent
    metadata = {"name": name, "namespace": args.namespace, "labels": args.labels}
    seed = k8s.core.v1.Secret(
        f"{agent.name}-seed",
        metadata={**metadata, "name": f"{name}-seed"},
        type="Opaque",
        string_data={"user-data": pulumi.Output.secret(user_data), "meta-data": meta_data(args)},
        opts=opts,
    )
    k8s.core.v1.PersistentVolumeClaim(
        f"{agent.name}-workspace",
        metadata={**metadata, "name": f"{name}-workspace"},
        spec={"accessModes": ["ReadWriteOnce"], "storageClassName": args.storage_class,
              "resources": {"requests": {"storage": f"{agent.resources.disk_gib}Gi"}}},
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(retain_on_delete=agent.retain_workspace)),
    )
    # The pod names the claim by its fixed name, not its output: the claim of a
    # WaitForFirstConsumer class is bound only once its pod exists.
    k8s.apps.v1.Deployment(
        f"{agent.name}-pod",
        metadata=metadata,
        spec={
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": args.labels},
            "template": {"metadata": {"labels": args.labels},
                         "spec": pod_spec(args, seed.metadata.name, f"{name}-workspace")},
        },
        opts=opts,
    )
    service = k8s.core.v1.Service(
        f"{agent.name}-ssh",
        metadata=metadata,
        spec={"type": args.service_type, "selector": args.labels,
              "ports": [{"name": "ssh", "port": SSH_PORT, "targetPort": SSH_PORT}]},
        opts=opts,
    )
    return service.spec.ports[0].node_port.apply(lambda port: {"host": args.node_address, "port": int(port)})


def kubectl() -> Optional[str]:
    """The kubectl setup builds (matching the cluster binaries), else PATH's."""
    built = Path(os.environ.get("AGENTFLEET_HOME") or Path.home() / ".agentfleet") / "kubernetes" / "current" / "bin" / "kubectl"
    return str(built) if os.access(built, os.X_OK) else shutil.which("kubectl")


class KubernetesBackend:
    """`backend: kubernetes`: agents as pods on the fleet's cluster (`kubernetes:` in the config),
    through one explicit pulumi-kubernetes Provider made from its kubeconfig."""

    def __init__(self) -> None:
        self._providers: dict[str, k8s.Provider] = {}

    def missing_tools(self) -> list[str]:
        return [] if kubectl() else ["kubectl (run scripts/setup kubernetes)"]

    def preflight(self, fleet: FleetSpec, agents: list[AgentSpec]) -> list[str]:
        """The cluster answers, its namespace is usable, its storage class exists."""
        cluster = fleet.cluster
        assert cluster is not None  # the spec refuses kubernetes agents without a cluster
        where = (f'stack "{fleet.stack}": cluster {cluster.kubeconfig}' + (f" (context {cluster.context})" if cluster.context
                 else "") + f" (agents {', '.join(a.name for a in agents)})")
        config = Path(cluster.kubeconfig).expanduser()
        if not config.is_file():
            return [f"{where}: field kubernetes.kubeconfig: no file {config}"]
        base = [kubectl() or "kubectl", "--kubeconfig", str(config), "--request-timeout", "10s",
                *(["--context", cluster.context] if cluster.context else [])]
        checks = [(["get", "--raw", "/readyz"], "does not answer")]
        if not cluster.create_namespace:
            checks.append((["get", "namespace", cluster.namespace], f"has no namespace {cluster.namespace}"))
        if cluster.storage_class:
            checks.append((["get", "storageclass", cluster.storage_class], f"has no storage class {cluster.storage_class}"))
        problems = []
        for argv, says in checks:
            done = run([*base, *argv], timeout_s=30)
            if not done.ok:
                problems.append(f"{where}: {says} ({tail(done.stderr or done.stdout, 2)})")
                break
        return problems

    def fleet_resources(self, fleet: FleetSpec, context: MachineContext,
                        opts: pulumi.ResourceOptions) -> dict[str, list[pulumi.Resource]]:
        """The provider for the fleet's cluster and (unless told otherwise) its namespace."""
        cluster = fleet.cluster
        assert cluster is not None
        config = Path(cluster.kubeconfig).expanduser()
        try:
            kubeconfig = config.read_text()
        except OSError as error:
            raise pulumi.RunError(f'stack "{fleet.stack}", field "kubernetes.kubeconfig": cannot read {config} '
                                  f"({error.strerror})") from None
        provider = k8s.Provider("fleet-cluster", kubeconfig=pulumi.Output.secret(kubeconfig), context=cluster.context,
                                namespace=cluster.namespace, opts=opts)
        self._providers[fleet.stack] = provider
        needs: list[pulumi.Resource] = [provider]
        if cluster.create_namespace:
            needs.append(k8s.core.v1.Namespace(
                "fleet-namespace", metadata={"name": cluster.namespace, "labels": {"app.kubernetes.io/managed-by": "agentfleet"}},
                opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(provider=provider))))
        return {agent.name: needs for agent in fleet.agents if agent.backend == "kubernetes"}

    def provision(self, agent: AgentSpec, context: MachineContext, user_data: pulumi.Output[str],
                  host_public_key: pulumi.Output[str], opts: pulumi.ResourceOptions) -> pulumi.Output[Endpoint]:
        cluster = (context.fleet.cluster if context.fleet else None)
        assert cluster is not None
        args = KubernetesAgentArgs(agent=agent, stack=context.stack, namespace=cluster.namespace,
                                   image=cluster.image or agent.image or agent_image_tag(),
                                   node_address=cluster.node_address, image_pull_policy=cluster.image_pull_policy,
                                   storage_class=cluster.storage_class)
        endpoint = provision(args, user_data, pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(provider=self._providers[context.stack])))
        return endpoint.apply(lambda e: Endpoint(host=e["host"], port=int(e["port"])))


BACKEND = KubernetesBackend()
