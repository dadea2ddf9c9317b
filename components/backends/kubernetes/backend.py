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
- A user namespace of its own (`hostUsers: false`: root in the pod is an unprivileged uid of the
  node) where the cluster supports it (userns.py); elsewhere the preflight warns, and the pod runs
  in the node's user namespace. The Deployment's pod template, as read back, says which.
- The same least privilege as Docker (components/backends/docker/backend.py): every capability
  dropped but the ones sshd and cloud-init need, no privilege escalation, the runtime's default
  seccomp profile, CPU and memory limits from the spec, no service-account token and no service
  links in the pod; like Docker, the pod lets sshd bind port 22 without CAP_NET_BIND_SERVICE
  (net.ipv4.ip_unprivileged_port_start).
- A restricted egress policy is out of the agent's reach, as in Docker
  (components/backends/docker/policy.py): the containers of a pod share its network namespace, so
  a container of its own, `policy`, holds the one capability the policy needs (NET_ADMIN) and the
  agent's container none that changes the network. `policy` is a native sidecar (an init container
  that restarts, Kubernetes 1.29+): its startup probe holds the agent's container back until the
  table is loaded, and it keeps the resolver and the recorder of refusals running beside it, in a
  PID namespace the agent does not see. Its files (table, names, code) come from a Secret of their
  own, mounted into it alone; a changed policy rolls the pod like a changed cloud-config. The
  record of refusals is an emptyDir it writes and the agent's container mounts read-only, where
  `agentfleet audit --denied` reads it over SSH; it lasts as long as the pod.
- The endpoint is a NodePort on the node address the operator reaches (the default), or the
  address the cluster's load balancer gives a LoadBalancer Service, on port 22.
- Ready means the pod's readiness probe reached sshd, which agent-init starts only after
  cloud-init; Pulumi awaits the Deployment's rollout itself.

One agent's objects come from `KubernetesAgentArgs`; `KubernetesBackend` reads the agent's cluster
(a host of the fleet: its `kubernetes:` block or a `hosts.<name>.kubernetes`, spec.ClusterSpec) into
them, makes each cluster's Provider and namespace, and checks each cluster before anything is
created (preflight.py).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from agentfleet.contract import DENIED_RECORD
from agentfleet.contract import WORKSPACE as WORKSPACE_MOUNT
from components.backends import Endpoint, MachineContext
from components.backends.docker.backend import CAPABILITIES
from components.backends.docker.policy import CAPABILITIES as POLICY_CAPABILITIES
from components.backends.docker.policy import CODE_FILES, ENTRYPOINT, MEMORY_MIB, STATE, STATUS
from components.backends.kubernetes.preflight import (
    MANAGED_BY_LABEL,
    NAMESPACE_STACK_LABEL,
    cluster_field,
    cluster_image,
    cluster_problems,
    cluster_user_namespaces,
    kubectl,
)
from components.cloudinit import TEMPLATES
from components.egress import EgressPolicy
from components.reconciled import digest
from components.image import agent_image_tag
from components.spec import FLEET_CLUSTER, AgentSpec, ClusterSpec, FleetSpec, HostSpec

SEED_MOUNT = "/var/lib/cloud/seed/nocloud"  # images/agent-init, images/agentfleet-cloud-init
SSH_PORT = 22
SEED_DIGEST = "agentfleet.dev/seed-sha256"
POLICY_DIGEST = "agentfleet.dev/policy-sha256"
POLICY_CONTAINER = "policy"
POLICY_CPUS = "100m"  # the resolver (Python) and a shell: idle but for loading the table and answering names
POLICY_STARTUP_S = 120  # how long the agent's container waits for the policy before `policy` restarts
RECORD_VOLUME = "egress-record"
RECORD_LIMIT = "16Mi"  # the recorder keeps at most two files of 1 MiB (cloud-init/agentfleet_denied.py)
SKIP_AWAIT = "pulumi.com/skipAwait"  # the provider's annotation: done once the API server has the object
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
    node_address: Optional[str]  # the address operators reach the cluster's node ports on (NodePort)
    service_type: str = "NodePort"
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    storage_class: Optional[str] = None
    user_namespace: bool = False  # hostUsers: false (the cluster supports it)

    @property
    def machine_name(self) -> str:
        """The name of the agent's objects: unique per stack, a valid DNS label."""
        name = re.sub(r"[^a-z0-9-]+", "-", f"agentfleet-{self.stack}-{self.agent.name}".lower())
        return name[:NAME_MAX].rstrip("-")

    @property
    def labels(self) -> dict[str, str]:
        """Selects the agent's pod; no value here is secret."""
        return {MANAGED_BY_LABEL: "agentfleet", NAMESPACE_STACK_LABEL: self.stack,
                "agentfleet.dev/agent": self.agent.name}


def meta_data(args: KubernetesAgentArgs) -> str:
    """NoCloud meta-data, as images/agentfleet-seed writes it for Docker agents."""
    return f"instance-id: {args.machine_name}\nlocal-hostname: {args.agent.name}\n"


def container_spec(args: KubernetesAgentArgs, seed_volume: str, workspace_volume: str) -> dict[str, Any]:
    agent = args.agent
    limits = {"cpu": f"{agent.resources.cpus:g}", "memory": f"{agent.resources.memory_mib}Mi"}
    record = ([{"name": RECORD_VOLUME, "mountPath": posixpath.dirname(DENIED_RECORD), "readOnly": True}]
              if agent.egress != "open" else [])
    return {
        "name": "agent",
        "image": args.image,
        "imagePullPolicy": args.image_pull_policy,
        "ports": [{"name": "ssh", "containerPort": SSH_PORT}],
        "volumeMounts": [
            {"name": seed_volume, "mountPath": SEED_MOUNT, "readOnly": True},
            {"name": workspace_volume, "mountPath": WORKSPACE_MOUNT},
            *record,
        ],
        "resources": {"requests": limits, "limits": limits},
        "securityContext": least_privilege(CAPABILITIES),
        "readinessProbe": {"tcpSocket": {"port": SSH_PORT}, "periodSeconds": READINESS_PERIOD_S},
    }


def least_privilege(capabilities: tuple[str, ...]) -> dict[str, Any]:
    """A container's securityContext: every capability dropped but `capabilities`, no escalation,
    the runtime's default seccomp profile (the same for the agent and its policy sidecar)."""
    return {"allowPrivilegeEscalation": False, "privileged": False,
            "capabilities": {"drop": ["ALL"], "add": list(capabilities)},
            "seccompProfile": {"type": "RuntimeDefault"}}


def policy_files(agent: AgentSpec) -> dict[str, str]:
    """The policy container's files, by path: the table, the names and the name servers the
    resolver asks (as components/egress.py writes them), and the code that applies them."""
    files = EgressPolicy.of(agent).files()
    files.update({"/" + path: (TEMPLATES / source).read_text() for path, source in CODE_FILES.items()})
    return files


def policy_secret_data(agent: AgentSpec) -> dict[str, str]:
    """The policy Secret's data: each file under its own name (no two share one)."""
    return {posixpath.basename(path): content for path, content in policy_files(agent).items()}


def policy_volumes(files: Mapping[str, str], secret: pulumi.Input[str]) -> list[tuple[dict[str, Any], str]]:
    """One volume of the policy Secret per directory its files go to, with where it is mounted."""
    directories: dict[str, list[str]] = {}
    for path in files:
        directories.setdefault(posixpath.dirname(path), []).append(posixpath.basename(path))
    return [({"name": f"policy-{index}", "secret": {
                "secretName": secret, "defaultMode": 0o400,
                "items": [{"key": name, "path": name} for name in sorted(names)]}}, directory)
            for index, (directory, names) in enumerate(sorted(directories.items()))]


def policy_container_spec(args: KubernetesAgentArgs, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The native sidecar that applies the egress policy (images/agentfleet-policy) and keeps
    its resolver and recorder running; the agent's container starts once its probe sees the
    policy applied."""
    limits = {"cpu": POLICY_CPUS, "memory": f"{MEMORY_MIB}Mi"}
    return {
        "name": POLICY_CONTAINER,
        "image": args.image,
        "imagePullPolicy": args.image_pull_policy,
        "command": [ENTRYPOINT],
        "restartPolicy": "Always",
        "volumeMounts": mounts,
        "resources": {"requests": limits, "limits": limits},
        "securityContext": least_privilege(POLICY_CAPABILITIES),
        "startupProbe": {"exec": {"command": ["sh", "-c", f'test "$(cat {STATUS} 2>/dev/null)" = 0']},
                         "periodSeconds": 1, "failureThreshold": POLICY_STARTUP_S},
    }


def pod_spec(args: KubernetesAgentArgs, seed_secret: pulumi.Input[str], claim: str,
             policy_secret: Optional[pulumi.Input[str]] = None) -> dict[str, Any]:
    """The agent's pod; with `policy_secret` (a restricted egress policy) its policy container too."""
    spec: dict[str, Any] = {
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
    if policy_secret is not None:
        volumes = policy_volumes(policy_files(args.agent), policy_secret)
        mounts = [{"name": volume["name"], "mountPath": directory, "readOnly": True} for volume, directory in volumes]
        # The name servers it pins before the agent starts (the agent's root may write the pod's
        # /etc/resolv.conf), kept when it restarts; and the record of refusals.
        mounts += [{"name": "policy-state", "mountPath": "/" + STATE},
                   {"name": RECORD_VOLUME, "mountPath": posixpath.dirname(DENIED_RECORD)}]
        spec["initContainers"] = [policy_container_spec(args, mounts)]
        spec["volumes"] += [volume for volume, _ in volumes]
        spec["volumes"] += [{"name": "policy-state", "emptyDir": {"sizeLimit": "1Mi"}},
                            {"name": RECORD_VOLUME, "emptyDir": {"sizeLimit": RECORD_LIMIT}}]
    if args.user_namespace:
        spec["hostUsers"] = False
    if args.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in args.image_pull_secrets]
    return spec


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
    policy_secret: Optional[k8s.core.v1.Secret] = None
    annotations = {SEED_DIGEST: pulumi.Output.unsecret(pulumi.Output.from_input(user_data).apply(digest))}
    if agent.egress != "open":
        data = policy_secret_data(agent)
        policy_secret = k8s.core.v1.Secret(f"{agent.name}-policy", metadata={**metadata, "name": f"{name}-policy"},
                                           type="Opaque", string_data=data, opts=opts)
        # A changed policy (or code applying it) rolls the pod, as a changed cloud-config does.
        annotations[POLICY_DIGEST] = digest(json.dumps(data, sort_keys=True))
    k8s.core.v1.PersistentVolumeClaim(
        f"{agent.name}-workspace",
        # The pod cannot start before its claim is bound, and the Deployment's rollout is awaited;
        # the provider's own wait for the claim never ends when it takes back a retained one.
        metadata={**metadata, "name": f"{name}-workspace", "annotations": {SKIP_AWAIT: "true"}},
        spec={"accessModes": ["ReadWriteOnce"], "storageClassName": args.storage_class,
              "resources": {"requests": {"storage": f"{agent.resources.disk_gib}Gi"}}},
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(retain_on_delete=agent.retain_workspace)),
    )
    # The pod names the claim by its fixed name, not its output: the claim of a
    # WaitForFirstConsumer class is bound only once its pod exists.
    deployment = k8s.apps.v1.Deployment(
        f"{agent.name}-pod",
        metadata=metadata,
        spec={
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": args.labels},
            # A changed cloud-config rolls the pod: the new one boots from the new seed, with the
            # same claim, Service and host key. The digest says nothing of the secret it hashes.
            "template": {"metadata": {"labels": args.labels, "annotations": annotations},
                         "spec": pod_spec(args, seed.metadata.name, f"{name}-workspace",
                                          policy_secret.metadata.name if policy_secret else None)},
        },
        opts=opts,
    )
    service = k8s.core.v1.Service(
        f"{agent.name}-ssh",
        # The Deployment's rollout already awaits sshd; the provider's own wait for a NodePort
        # Service adds a fixed 10 s settle time per Service. A load balancer's address is awaited.
        metadata={**metadata, "annotations": {SKIP_AWAIT: "true"}} if args.service_type == "NodePort"
        else metadata,
        spec={"type": args.service_type, "selector": args.labels,
              "ports": [{"name": "ssh", "port": SSH_PORT, "targetPort": SSH_PORT}]},
        opts=opts,
    )
    # As the API server kept it: one without UserNamespacesSupport drops hostUsers.
    user_namespace = deployment.spec.template.spec.host_users.apply(lambda kept: "remapped" if kept is False else "none")
    if args.service_type == "LoadBalancer":
        # The provider awaits the load balancer's address before the Service is done.
        address = service.status.load_balancer.ingress.apply(lambda ingress: ingress[0].ip or ingress[0].hostname)
        return pulumi.Output.all(address, user_namespace).apply(
            lambda v: {"host": v[0], "port": SSH_PORT, "user_namespace": v[1]})
    return pulumi.Output.all(service.spec.ports[0].node_port, user_namespace).apply(
        lambda v: {"host": args.node_address, "port": int(v[0]), "user_namespace": v[1]})


def resource_suffix(host: HostSpec) -> str:
    """The fleet's own cluster keeps the plain resource names; other cluster hosts add their name."""
    return "" if host.name == FLEET_CLUSTER else f"-{host.name}"


class KubernetesBackend:
    """`backend: kubernetes`: agents as pods on the fleet's clusters (its `kubernetes:` block and
    `hosts.<name>.kubernetes`), through one explicit pulumi-kubernetes Provider per cluster made
    from its kubeconfig."""

    policy_in_machine = False  # the pod's policy container applies it

    def __init__(self) -> None:
        self._providers: dict[tuple[str, str], k8s.Provider] = {}  # (stack, host) -> its Provider
        self._user_namespaces: set[tuple[str, str]] = set()  # (stack, host) whose pods get their own

    def missing_tools(self) -> list[str]:
        return [] if kubectl() else ["kubectl (run scripts/setup kubernetes)"]

    def preflight(self, fleet: FleetSpec, agents: list[AgentSpec]) -> list[str]:
        problems: list[str] = []
        for host, placed in fleet.placed(agents).items():
            found = cluster_problems(fleet.stack, host, placed)
            problems += found
            if not found:
                self._judge_user_namespaces(fleet.stack, host, placed)
        return problems

    def _judge_user_namespaces(self, stack: str, host: HostSpec, agents: list[AgentSpec]) -> None:
        gap = cluster_user_namespaces(host)
        if gap is None:
            self._user_namespaces.add((stack, host.name))
            return
        self._user_namespaces.discard((stack, host.name))
        pulumi.log.warn(f'stack "{stack}": cluster "{host.name}" (agents {", ".join(a.name for a in agents)}): '
                        f"pods run in the node's user namespace (root in them is the node's root, held by their "
                        f"capabilities): {gap}")

    def fleet_resources(self, fleet: FleetSpec, context: MachineContext,
                        opts: pulumi.ResourceOptions) -> dict[str, list[pulumi.Resource]]:
        """Per cluster the fleet's agents are placed on: its Provider and (unless told otherwise)
        its namespace."""
        needs: dict[str, list[pulumi.Resource]] = {}
        agents = [agent for agent in fleet.agents if agent.backend == "kubernetes"]
        for host, placed in fleet.placed(agents).items():
            cluster = host.cluster
            assert cluster is not None
            config = Path(cluster.kubeconfig).expanduser()
            try:
                kubeconfig = config.read_text()
            except OSError as error:
                raise pulumi.RunError(f'stack "{fleet.stack}", field "{cluster_field(host, "kubeconfig")}": cannot read '
                                      f"{config} ({error.strerror})") from None
            suffix = resource_suffix(host)
            provider = k8s.Provider(f"fleet-cluster{suffix}", kubeconfig=pulumi.Output.secret(kubeconfig),
                                    context=cluster.context, namespace=cluster.namespace, opts=opts)
            self._providers[(fleet.stack, host.name)] = provider
            made: list[pulumi.Resource] = [provider]
            if cluster.create_namespace:
                made.append(k8s.core.v1.Namespace(
                    f"fleet-namespace{suffix}",
                    metadata={"name": cluster.namespace, "labels": {MANAGED_BY_LABEL: "agentfleet",
                                                                    NAMESPACE_STACK_LABEL: fleet.stack}},
                    opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                        provider=provider,
                        # Kept while it keeps a workspace: deleting a namespace deletes its claims.
                        retain_on_delete=any(agent.retain_workspace for agent in placed)))))
            needs.update({agent.name: made for agent in placed})
        return needs

    def runs_agent_image(self, agent: AgentSpec, context: MachineContext) -> bool:
        # Only this recipe's own tag: a copy in a registry (`kubernetes.image`) may be of another version.
        return cluster_image(self._cluster(agent, context)[1], agent) == agent_image_tag()

    def provision(self, agent: AgentSpec, context: MachineContext, user_data: pulumi.Output[str],
                  host_public_key: pulumi.Output[str], opts: pulumi.ResourceOptions) -> pulumi.Output[Endpoint]:
        host, cluster = self._cluster(agent, context)
        args = KubernetesAgentArgs(agent=agent, stack=context.stack, namespace=cluster.namespace,
                                   image=cluster_image(cluster, agent), node_address=cluster.node_address,
                                   service_type=cluster.service_type,
                                   image_pull_policy=cluster.image_pull_policy,
                                   image_pull_secrets=cluster.image_pull_secrets, storage_class=cluster.storage_class,
                                   user_namespace=(context.stack, host.name) in self._user_namespaces)
        endpoint = provision(args, user_data, pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(provider=self._providers[(context.stack, host.name)])))
        return endpoint.apply(lambda e: Endpoint(host=e["host"], port=int(e["port"]), user_namespace=e["user_namespace"]))

    @staticmethod
    def _cluster(agent: AgentSpec, context: MachineContext) -> tuple[HostSpec, ClusterSpec]:
        """The host an agent is placed on, and its cluster."""
        assert context.fleet is not None
        host = context.fleet.host(context.fleet.placement(agent))
        assert host.cluster is not None
        return host, host.cluster


BACKEND = KubernetesBackend()
