"""Smoke test of the real pulumi-kubernetes provider (built by scripts/setup) against the real
test cluster, through the real Pulumi engine: a Namespace, a Secret, a pod from the agent image
with the Secret mounted, and a NodePort Service come up and answer; destroy removes them."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from tests.e2e.support import inline_stack
from tests.kubecluster.cluster import Cluster

TOKEN = "smoke-" + uuid.uuid4().hex
# The agent image's init waits for a cloud-init seed; this pod only needs its sshd to answer.
SSHD = "ssh-keygen -A && mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e"


def smoke_program(kubeconfig: str, image: str, namespace: str):
    def program() -> None:
        provider = k8s.Provider("cluster", kubeconfig=pulumi.Output.secret(kubeconfig))
        opts = pulumi.ResourceOptions(provider=provider)
        ns = k8s.core.v1.Namespace("ns", metadata={"name": namespace}, opts=opts)
        secret = k8s.core.v1.Secret("token", metadata={"namespace": ns.metadata.name},
                                    string_data={"token": TOKEN}, opts=opts)
        labels = {"app": "smoke"}
        k8s.core.v1.Pod("agent", metadata={"namespace": ns.metadata.name, "labels": labels}, spec={
            "containers": [{
                "name": "agent", "image": image, "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", SSHD],
                "ports": [{"containerPort": 22}],
                "volumeMounts": [{"name": "token", "mountPath": "/etc/smoke", "readOnly": True}],
            }],
            "volumes": [{"name": "token", "secret": {"secretName": secret.metadata.name}}],
        }, opts=opts)
        service = k8s.core.v1.Service("ssh", metadata={"namespace": ns.metadata.name}, spec={
            "type": "NodePort", "selector": labels, "ports": [{"port": 22, "targetPort": 22}],
        }, opts=opts)
        pulumi.export("node_port", service.spec.ports[0].node_port)

    return program


def ssh_banner(host: str, port: int, timeout_s: float = 30) -> bytes:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as sock:
                return sock.recv(64)
        except OSError as error:
            last = error
            time.sleep(0.2)
    raise AssertionError(f"nothing answered on {host}:{port} within {timeout_s:g} s (last: {last})")


def test_namespace_secret_pod_and_nodeport_come_up_and_go(kube_cluster: Cluster, agent_image: str,
                                                           tmp_path: Path) -> None:
    namespace = f"smoke-{uuid.uuid4().hex[:6]}"
    stack = inline_stack("smoke", "kubernetes-smoke",
                         smoke_program(kube_cluster.kubeconfig.read_text(), agent_image, namespace), tmp_path)
    try:
        started = time.monotonic()
        node_port = stack.up(on_output=lambda _: None).outputs["node_port"].value
        print(f"\npulumi up: {time.monotonic() - started:.1f} s")
        assert ssh_banner(kube_cluster.node_ip, int(node_port)).startswith(b"SSH-2.0-OpenSSH")
        pod = kube_cluster.kubectl("get", "pod", "-n", namespace, "-l", "app=smoke", "-o", "name").strip()
        assert kube_cluster.kubectl("exec", "-n", namespace, pod, "--", "cat", "/etc/smoke/token") == TOKEN
        state = "".join(path.read_text() for path in (tmp_path / "state").rglob("*.json"))
        assert TOKEN not in state, "the Secret's value is in the state in plain text"
        client_key = kube_cluster.kubeconfig.read_text().split("client-key-data: ")[1].split()[0]
        assert client_key not in state, "the kubeconfig's client key is in the state in plain text"
        started = time.monotonic()
        stack.destroy(on_output=lambda _: None)
        print(f"pulumi destroy: {time.monotonic() - started:.1f} s")
        assert kube_cluster.kubectl("get", "namespace", namespace, check=False) == ""
    finally:
        stack.workspace.remove_stack("smoke", force=True)
