"""components/backends/kubernetes/backend.py on the real test cluster, through the real Pulumi
engine and pulumi-kubernetes provider: one agent comes up from its cloud-config (a Secret),
answers SSH with its pinned host key, keeps least privilege, survives its pod being deleted out
of band with the same endpoint, host key and workspace, and destroy leaves nothing in the
namespace."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from components.backends.kubernetes.backend import KubernetesAgentArgs, provision
from components.cloudinit import AgentKeys, render_cloud_config
from components.keys import generate_ed25519
from components.spec import load_fleet
from tests.e2e.support import inline_stack
from tests.e2e.kubernetes.storage import STORAGE_CLASS, dynamic_storage
from tests.kubecluster.cluster import Cluster

# What the pod may do as root, written here (linux/capability.h numbers), not taken from the code:
# sshd's and cloud-init's needs, as in Docker; nothing that changes the network (a restricted
# policy runs in a container of its own: test_kubernetes_policy.py).
POD_CAPABILITIES = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "SETGID": 6, "SETUID": 7,
                    "SYS_CHROOT": 18, "AUDIT_WRITE": 29}


def ssh(key: Path, known_hosts: Path, host: str, port: int, command: str) -> str:
    return subprocess.run(
        ["ssh", "-i", str(key), "-p", str(port), "-o", f"UserKnownHostsFile={known_hosts}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
         f"agent@{host}", command], capture_output=True, text=True, check=True, timeout=30).stdout


def wait_for_ssh(*args, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ssh(*args)
        except subprocess.SubprocessError as error:
            if time.monotonic() > deadline:
                raise AssertionError(f"the agent did not answer SSH within {timeout_s:g} s: {error}") from error
            time.sleep(1)


def test_agent_pod_from_cloud_config_secret(kube_cluster: Cluster, agent_image: str, make_key,
                                            tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    namespace = f"agents-{suffix}"
    dynamic_storage(kube_cluster)
    spec = load_fleet("kube", {"agents": [{"name": "k1", "identity": {"name": "K One", "email": "k1@example.com"},
                                           "egress": "open", "resources": {"disk": 2}}]}, {}.get).agents[0]
    operator = make_key("operator")
    host_private, host_public = generate_ed25519("host")
    user_data = render_cloud_config(spec, AgentKeys(operator.public, host_private, host_public))
    args = KubernetesAgentArgs(agent=spec, stack="kube", namespace=namespace, image=agent_image,
                               node_address=kube_cluster.node_ip, image_pull_policy="Never",
                               storage_class=STORAGE_CLASS)

    def program() -> None:
        provider = k8s.Provider("cluster", kubeconfig=pulumi.Output.secret(kube_cluster.kubeconfig.read_text()))
        ns = k8s.core.v1.Namespace("ns", metadata={"name": namespace}, opts=pulumi.ResourceOptions(provider=provider))
        endpoint = provision(args, pulumi.Output.secret(user_data),
                             pulumi.ResourceOptions(provider=provider, depends_on=[ns],
                                                    custom_timeouts=pulumi.CustomTimeouts(create="4m")))
        pulumi.export("endpoint", endpoint)

    stack = inline_stack("kube", "kubernetes-agent", program, tmp_path)
    try:
        started = time.monotonic()
        endpoint = stack.up(on_output=lambda _: None).outputs["endpoint"].value
        print(f"\nagent up: {time.monotonic() - started:.1f} s")
        host, port = endpoint["host"], int(endpoint["port"])
        assert host == kube_cluster.node_ip
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(f"[{host}]:{port} {' '.join(host_public.split()[:2])}\n")
        # The pinned host key answers (StrictHostKeyChecking against it alone) as the agent user,
        # at once: `up` returned after the rollout, whose readiness probe waited for sshd.
        assert ssh(operator.path, known_hosts, host, port, "id -un; hostname").split() == ["agent", "k1"]

        pod = json.loads(kube_cluster.kubectl("get", "pod", "-n", namespace, "-o", "json"))["items"][0]
        text = json.dumps(pod)
        assert host_private.split("\n")[1] not in text, "the cloud-config is in the pod object"
        container = pod["spec"]["containers"][0]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        # Enforced inside: the memory limit of the pod's cgroup, no new privileges for the session,
        # and the capabilities the kernel gives the pod's processes (their bounding set).
        limit, no_new_privs, bounding = ssh(
            operator.path, known_hosts, host, port, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
            "awk '/^NoNewPrivs/ {n = $2} /^CapBnd/ {b = $2} END {print n, b}' /proc/self/status").split()
        assert (int(limit), no_new_privs) == (spec.resources.memory_mib * 2**20, "1")
        assert int(bounding, 16) == sum(1 << bit for bit in POD_CAPABILITIES.values()), \
            f"CapBnd {bounding}: not exactly {sorted(POD_CAPABILITIES)}"
        assert not pod["spec"]["automountServiceAccountToken"]
        state = "".join(path.read_text() for path in (tmp_path / "state").rglob("*.json"))
        assert host_private.split("\n")[1] not in state, "the cloud-config is in the state in plain text"

        ssh(operator.path, known_hosts, host, port, "echo kept > ~/workspace/mark")
        kube_cluster.kubectl("delete", "pod", "-n", namespace, pod["metadata"]["name"], "--wait=true")
        # The Deployment brings the pod back by itself (no `up` to wait for: hence the wait here),
        # with the same endpoint, host key and workspace.
        assert wait_for_ssh(operator.path, known_hosts, host, port, "cat ~/workspace/mark").strip() == "kept"

        stack.destroy(on_output=lambda _: None)
        left = kube_cluster.kubectl("get", "all,secret,pvc", "-n", namespace, "-o", "name", check=False)
        assert left.strip() == "", left
    finally:
        stack.workspace.remove_stack("kube", force=True)
        kube_cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)
