"""The egress policy out of the agent's reach in a pod, for real, on the test cluster: root inside
the agent's container (`kubectl exec`, which runs as the container's root) holds no capability over
the network, cannot list, flush or change the policy, cannot see or kill the resolver, and gets no
DNS query past it; the policy lives in the pod's native sidecar (`policy`), refusals are on record
for `agentfleet audit --denied`, a sidecar that ends comes back without the policy ever lifting,
and a changed `allow` rolls the pod with the new policy.

The agent's remote is a name served by a DNS server the test controls, published on the node's
address and asked through `dns`, so every check below could fail: were root exempt, as uid 0 was
while the policy ran in the agent's own container, its query would reach that server's log.
"""

from __future__ import annotations

import io
import json
import subprocess
import time
import uuid
from typing import Iterator

import pytest

from agentfleet import Fleet
from agentfleet.cli import main as cli
from agentfleet.contract import DENIED_RECORD
from components.egress import RESOLVER_MARK
from components.keys import generate_ed25519
from tests.e2e.kubernetes.test_kubernetes_fleet import cluster_config, pod_git_server, pod_uid  # noqa: F401
from tests.e2e.support import FleetStack, GitServer
from tests.e2e.test_egress_names import NAME, OUTSIDE, DnsServer
from tests.e2e.test_policy_out_of_reach import QUERY
from tests.kubecluster.cluster import Cluster

AGENT = "guarded"
NET_ADMIN, NET_RAW = 12, 13  # linux/capability.h
API_PORT = 6443  # the cluster's API server, on the node's address: outside the policy


@pytest.fixture(scope="module")
def pod_dns(kube_cluster: Cluster, pod_git_server: GitServer, agent_image: str) -> Iterator[DnsServer]:  # noqa: F811
    with DnsServer(f"dns-{pod_git_server.name}", pod_git_server.network, agent_image,
                   publish_on=kube_cluster.node_ip) as server:
        yield server


@pytest.fixture(scope="module")
def guarded(kube_cluster: Cluster, make_stack, pod_git_server: GitServer, pod_dns: DnsServer):  # noqa: F811
    host, port = pod_git_server.endpoint
    pod_dns.records({NAME: [host], OUTSIDE: [host]})
    private, public = generate_ed25519("guarded-deploy-key")
    pod_git_server.authorize(public)
    key = " ".join(pod_git_server.known_hosts_line.split()[1:])
    namespace = f"policy-{uuid.uuid4().hex[:6]}"
    stack: FleetStack = make_stack("kpolicy")
    stack.set_secret("deployKey", private)
    stack.set_fleet({
        "kubernetes": cluster_config(kube_cluster, namespace),
        "agents": [{"name": AGENT, "backend": "kubernetes", "identity": {"name": "G", "email": "g@fleet.test"},
                    "resources": {"cpus": 0.5, "memory": "256m", "disk": 2},
                    "remote": f"ssh://git@{NAME}:{port}/srv/git/app.git", "known_hosts": [f"[{NAME}]:{port} {key}"],
                    "credential": {"ssh_key": "deployKey"}, "dns": [kube_cluster.node_ip]}],
    })
    try:
        yield stack, stack.up(), namespace
    finally:
        kube_cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)


def pod_name(cluster: Cluster, namespace: str) -> str:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", f"agentfleet.dev/agent={AGENT}",
                                      "-o", "json"))["items"]
    (pod,) = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]
    return pod["metadata"]["name"]


def in_pod(cluster: Cluster, namespace: str, *argv: str, container: str = "agent") -> tuple[int, str]:
    """Run argv as the container's root (what `kubectl exec` runs as): exit status and output."""
    done = subprocess.run([str(cluster.home / "bin" / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), "exec",
                           "-n", namespace, pod_name(cluster, namespace), "-c", container, "--", *argv],
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


def policy_in_force(cluster: Cluster, namespace: str) -> str:
    status, table = in_pod(cluster, namespace, "nft", "list", "table", "inet", "agentfleet", container="policy")
    assert status == 0, table
    return table


def agent_run(outputs: dict, stack: FleetStack, command: str):
    with Fleet.from_outputs(outputs, stack.name) as client:
        return client.agent(AGENT).run(command, timeout=60)


def reach(address: str, port: int) -> str:
    return f"timeout 10 bash -c 'exec 3<>/dev/tcp/{address}/{port}'"


def capabilities(cluster: Cluster, namespace: str, container: str) -> int:
    status, said = in_pod(cluster, namespace, "grep", "CapEff", "/proc/self/status", container=container)
    assert status == 0, said
    return int(said.split()[1], 16)


def test_the_agent_reaches_its_remote_by_name_through_the_pods_resolver(guarded, pod_dns: DnsServer):
    stack, outputs, _ = guarded
    done = agent_run(outputs, stack, "git ls-remote -q origin >/dev/null && git rev-parse --abbrev-ref HEAD")
    assert done.ok and done.stdout.strip() == f"agent/{AGENT}", done.stderr
    assert NAME in pod_dns.queries()


def test_root_in_the_agent_container_holds_no_capability_over_the_network(guarded, kube_cluster):
    _, _, namespace = guarded
    assert in_pod(kube_cluster, namespace, "id", "-u") == (0, "0\n")
    agent = capabilities(kube_cluster, namespace, "agent")
    assert not agent & (1 << NET_ADMIN | 1 << NET_RAW), f"{agent:x}"
    assert capabilities(kube_cluster, namespace, "policy") == 1 << NET_ADMIN
    # Nor may it mark a socket as the resolver's (the firewall's pass to the upstream servers).
    status, said = in_pod(kube_cluster, namespace, "python3", "-c", "import socket; socket.socket()"
                          f".setsockopt(socket.SOL_SOCKET, socket.SO_MARK, {RESOLVER_MARK})")
    assert status != 0 and "not permitted" in said, said


@pytest.mark.parametrize("script", [
    "nft list ruleset",
    "nft flush ruleset",
    "nft delete table inet agentfleet",
    "nft add table inet mine",
    "nft add rule inet agentfleet output accept",
    "nft add element inet agentfleet allowed4 '{ 1.2.3.4 . tcp . 8080 }'",
    "ip link set lo down",
])
def test_root_in_the_agent_container_cannot_list_flush_or_change_the_policy(guarded, kube_cluster, script):
    _, _, namespace = guarded
    status, output = in_pod(kube_cluster, namespace, "sh", "-c", script)
    assert status != 0, f"{script!r} worked as root in the agent's container: {output}"
    assert "jump refuse" in policy_in_force(kube_cluster, namespace)


def test_root_in_the_agent_container_cannot_see_or_kill_the_resolver(guarded, kube_cluster):
    stack, outputs, namespace = guarded
    status, before = in_pod(kube_cluster, namespace, "cat", "/run/agentfleet/resolver.pid", container="policy")
    assert status == 0, before
    status, output = in_pod(kube_cluster, namespace, "sh", "-c",
                            # (resolve[r]: the pattern does not match this very script)
                            "for p in /proc/[0-9]*; do grep -qa 'agentfleet/resolve[r]' $p/cmdline && echo $p && "
                            "kill -9 ${p#/proc/}; done; pkill -9 -f 'resolve[r]'; true")
    assert output.strip() == "", f"root in the agent's container saw a resolver: {output}"
    # The same resolver runs on in the policy container, and still answers the agent's names.
    assert in_pod(kube_cluster, namespace, "sh", "-c", f"grep -qa resolver /proc/{before.strip()}/cmdline",
                  container="policy")[0] == 0
    done = agent_run(outputs, stack, "git ls-remote -q origin")
    assert done.ok, done.stderr


def test_root_in_the_agent_container_gets_no_query_past_the_resolver(guarded, kube_cluster, pod_dns: DnsServer):
    _, _, namespace = guarded
    before = pod_dns.queries().count(OUTSIDE)
    # Straight to the upstream server: refused (only the resolver's marked sockets may).
    status, raw = in_pod(kube_cluster, namespace, "python3", "-c", QUERY, kube_cluster.node_ip, OUTSIDE)
    assert status != 0, raw
    # To the pod's own name server: the policy's resolver answers NXDOMAIN (3) for a name outside it.
    status, conf = in_pod(kube_cluster, namespace, "cat", "/etc/resolv.conf")
    nameserver = next(line.split()[1] for line in conf.splitlines() if line.startswith("nameserver"))
    status, answer = in_pod(kube_cluster, namespace, "python3", "-c", QUERY, nameserver, OUTSIDE)
    assert (status, answer.strip()) == (0, "3"), answer
    # The shared /etc/resolv.conf pointed at the upstream: still nothing past the resolver.
    status, said = in_pod(kube_cluster, namespace, "sh", "-c", f"cp /etc/resolv.conf /tmp/resolv.keep && "
                          f"echo 'nameserver {kube_cluster.node_ip}' >/etc/resolv.conf && getent hosts {OUTSIDE}; "
                          "status=$?; cat /tmp/resolv.keep >/etc/resolv.conf; exit $status")
    assert status != 0, said
    assert pod_dns.queries().count(OUTSIDE) == before, "root's query for a name outside the policy reached the server"


def test_after_roots_attempts_the_policy_holds_and_refusals_are_on_record(guarded, kube_cluster, monkeypatch):
    stack, outputs, namespace = guarded
    in_pod(kube_cluster, namespace, "sh", "-c", "nft flush ruleset; iptables -P OUTPUT ACCEPT; true")
    assert agent_run(outputs, stack, "git ls-remote -q origin").ok
    refused = agent_run(outputs, stack, reach(kube_cluster.node_ip, API_PORT))
    assert not refused.ok and "refused" in refused.stderr, refused.stderr
    status, output = in_pod(kube_cluster, namespace, "sh", "-c", f"echo forged >>{DENIED_RECORD}")
    assert status != 0, output

    for name, value in {**stack.env, "AGENTFLEET_PERSIST": "0"}.items():
        monkeypatch.setenv(name, value)  # `pulumi stack output` runs with the process environment
    out, err = io.StringIO(), io.StringIO()
    status = cli(["--stack", stack.name, "--cwd", str(stack.project_dir), "audit", "--denied", AGENT, "--json"],
                 out, err)
    assert (status, err.getvalue()) == (0, ""), err.getvalue()
    entries = [json.loads(line) for line in out.getvalue().splitlines()]
    assert any((entry["destination"], entry["port"], entry["protocol"]) == (kube_cluster.node_ip, API_PORT, "tcp")
               for entry in entries), entries


def test_a_policy_sidecar_that_ends_is_restarted_and_the_policy_never_lifts(guarded, kube_cluster):
    stack, outputs, namespace = guarded
    in_pod(kube_cluster, namespace, "kill", "1", container="policy")  # its PID 1 exits on TERM
    deadline = time.monotonic() + 60
    while restarts(kube_cluster, namespace) < 1:
        assert time.monotonic() < deadline, "the policy sidecar was not restarted"
        time.sleep(0.5)
    # The pod is Ready (in its Service's endpoints) again once the sidecar's probe saw the policy applied.
    kube_cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"pod/{pod_name(kube_cluster, namespace)}",
                         "--timeout=60s")
    assert "jump refuse" in policy_in_force(kube_cluster, namespace)
    assert agent_run(outputs, stack, "git ls-remote -q origin").ok  # the remote's name resolves again
    assert not agent_run(outputs, stack, reach(kube_cluster.node_ip, API_PORT)).ok


def restarts(cluster: Cluster, namespace: str) -> int:
    pod = json.loads(cluster.kubectl("get", "pod", "-n", namespace, pod_name(cluster, namespace), "-o", "json"))
    return next(status["restartCount"] for status in pod["status"].get("initContainerStatuses", [])
                if status["name"] == "policy")


def test_a_changed_allow_rolls_the_pod_with_the_new_policy(guarded, kube_cluster):
    stack, outputs, namespace = guarded
    before = pod_uid(kube_cluster, namespace, AGENT)
    config = stack.fleet()
    config["agents"][0]["allow"] = [f"{kube_cluster.node_ip}:{API_PORT}"]
    stack.set_fleet(config)
    changed = stack.up()["agents"][AGENT]
    assert {key: changed[key] for key in ("host", "port", "known_hosts")} == {
        key: outputs["agents"][AGENT][key] for key in ("host", "port", "known_hosts")}
    assert pod_uid(kube_cluster, namespace, AGENT) != before
    assert f"dport {API_PORT} accept" in policy_in_force(kube_cluster, namespace)
    done = agent_run(outputs, stack, reach(kube_cluster.node_ip, API_PORT))
    assert done.ok, done.stderr
