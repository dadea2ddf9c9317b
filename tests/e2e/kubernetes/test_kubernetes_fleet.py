"""`backend: kubernetes` through the whole product, on the real test cluster, with the real engine
and the real pulumi-kubernetes provider: a fleet of two pods and one Docker container comes up with
`pulumi up`; each answers through the client with its pinned host key and its own identity; a pod
clones its remote at first boot from the git server, commits and pushes; egress is restricted in
the pod; a Deployment deleted out of band is back after `up` with the same endpoint, host key and
workspace, and a changed identity rolls the pod, keeping them too; a broken cluster setting is
refused before anything is made; destroy leaves nothing in the namespace but a retained workspace
(the provisioner deletes the other volumes), which the next `up` takes back."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any, Iterator

import pytest
from pulumi import automation as auto

from agentfleet import Fleet
from agentfleet.cli import main as cli
from components.keys import generate_ed25519
from tests.e2e.kubernetes.storage import dynamic_storage
from tests.e2e.support import FleetStack, GitServer, start_git_server
from tests.kubecluster.cluster import Cluster

COMMAND_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def pod_git_server(kube_cluster: Cluster, agent_image: str) -> Iterator[GitServer]:
    """The git server, published on the node's address: pods reach it there (this machine routes
    their traffic, and only published ports of containers are open to it)."""
    server = start_git_server(agent_image, publish_on=kube_cluster.node_ip)
    try:
        yield server
    finally:
        server.remove()


def cluster_config(cluster: Cluster, namespace: str, **settings: Any) -> dict[str, Any]:
    """The test cluster, its default storage class giving each claim a volume."""
    dynamic_storage(cluster)
    return {"kubeconfig": str(cluster.kubeconfig), "node_address": cluster.node_ip, "namespace": namespace,
            "image_pull_policy": "Never", **settings}


@pytest.fixture(scope="module")
def fleet(kube_cluster: Cluster, make_stack, pod_git_server: GitServer):
    suffix = uuid.uuid4().hex[:6]
    namespace = f"fleet-{suffix}"
    remote_private, remote_public = generate_ed25519("pod-deploy-key")
    pod_git_server.authorize(remote_public)
    stack: FleetStack = make_stack("kube")
    stack.set_secret("podRemoteKey", remote_private)
    stack.set_fleet({
        "kubernetes": cluster_config(kube_cluster, namespace),
        "defaults": {"resources": {"cpus": 0.5, "memory": "256m", "pids": 128, "disk": 2}},
        "agents": [
            {"name": "pod", "backend": "kubernetes", "identity": {"name": "Pod Agent", "email": "pod@fleet.test"},
             "remote": pod_git_server.url, "known_hosts": [pod_git_server.known_hosts_line],
             "credential": {"ssh_key": "podRemoteKey"}},
            {"name": "keeper", "backend": "kubernetes", "retain_workspace": True,
             "identity": {"name": "Keeper", "email": "keeper@fleet.test"}},
            {"name": "box", "identity": {"name": "Box Agent", "email": "box@fleet.test"}},
        ],
    })
    try:
        outputs = stack.up()
        with Fleet.from_outputs(outputs, stack.name) as client:
            yield stack, outputs, client, namespace
    finally:
        kube_cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)


def run_ok(client: Fleet, agent: str, command: str) -> str:
    result = client.agent(agent).run(command, timeout=COMMAND_TIMEOUT_S)
    assert result.ok, f"{agent}: `{command}` exited {result.exit_status}: {result.stderr}"
    return result.stdout.strip()


def test_every_agent_answers_with_its_identity(fleet, kube_cluster):
    _, outputs, client, _ = fleet
    agents = outputs["agents"]
    assert (agents["pod"]["backend"], agents["pod"]["host"]) == ("kubernetes", kube_cluster.node_ip)
    assert agents["pod"]["port"] != agents["keeper"]["port"]
    assert agents["box"]["backend"] == "docker"
    for name in ("pod", "keeper", "box"):
        said = run_ok(client, name, "git config user.email; id -un; grep NoNewPrivs /proc/self/status")
        assert said.split() == [f"{name}@fleet.test", "agent", "NoNewPrivs:", "1"]


def test_the_pod_cloned_its_remote_commits_and_pushes_its_branch(fleet, pod_git_server: GitServer):
    _, _, client, _ = fleet
    assert run_ok(client, "pod", "git rev-parse --abbrev-ref HEAD") == "agent/pod"
    assert run_ok(client, "pod", "cat README") == "shared project"
    run_ok(client, "pod", "echo from-a-pod > pod.txt && git add pod.txt && "
                          "git commit -q -m 'work of the pod agent' && git push -q origin HEAD")
    assert pod_git_server.branch_authors()["agent/pod"] == "<pod@fleet.test>"
    # The fleet's guard rail is the agent image's pre-push hook (not in the pod's cloud-config).
    refused = client.agent("pod").run("git push -q origin HEAD:main", timeout=COMMAND_TIMEOUT_S)
    assert not refused.ok and "the base branch" in refused.stderr, refused.stderr
    assert pod_git_server.branch_authors().get("main") != "<pod@fleet.test>"


def test_doctor_and_audit_treat_pods_like_any_agent(fleet, monkeypatch):
    stack, _, _, _ = fleet
    for name, value in {**stack.env, "AGENTFLEET_PERSIST": "0"}.items():
        monkeypatch.setenv(name, value)  # `pulumi stack output` runs with the process environment

    def run(*argv: str) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        status = cli(["--stack", stack.name, "--cwd", str(stack.project_dir), *argv], out, err)
        return status, out.getvalue() + err.getvalue()

    status, said = run("doctor")
    assert status == 0 and said.endswith("all 3 agents healthy\n"), said
    status, said = run("audit", "pod", "--json")
    assert status == 0, said
    # git's own trace in the pod: the push of the test before, and the first clone at boot.
    commands = {entry["command"] for entry in map(json.loads, said.splitlines()) if entry["source"] == "git"}
    assert "git push -q origin HEAD" in commands, commands
    assert any(command.startswith("git clone") for command in commands), commands


def test_egress_from_the_pod_reaches_its_remote_only(fleet, kube_cluster, pod_git_server: GitServer):
    _, _, client, _ = fleet
    host, port = pod_git_server.endpoint
    reach = "timeout 10 bash -c 'exec 3<>/dev/tcp/{}/{}'"
    assert client.agent("pod").run(reach.format(host, port), timeout=COMMAND_TIMEOUT_S).ok
    # The cluster's API server listens on the node's address too; the policy refuses it.
    refused = client.agent("pod").run(reach.format(kube_cluster.node_ip, 6443), timeout=COMMAND_TIMEOUT_S)
    assert not refused.ok and "refused" in refused.stderr, refused.stderr


def test_a_deployment_deleted_out_of_band_is_back_after_up_with_its_endpoint_key_and_workspace(fleet, kube_cluster):
    stack, outputs, client, namespace = fleet
    run_ok(client, "pod", "echo kept > ~/workspace/mark")
    before = pod_uid(kube_cluster, namespace, "pod")
    kube_cluster.kubectl("delete", "deployment", "-n", namespace, f"agentfleet-{stack.name}-pod", "--wait=true")
    assert stack.up() == outputs  # refresh finds it gone; up makes it again
    assert pod_uid(kube_cluster, namespace, "pod") != before
    assert run_ok(client, "pod", "cat ~/workspace/mark") == "kept"


def test_a_changed_identity_rolls_the_pod_with_its_endpoint_key_and_workspace(fleet, kube_cluster):
    stack, outputs, client, namespace = fleet
    before = pod_uid(kube_cluster, namespace, "pod")
    config = stack.fleet()
    config["agents"][0]["identity"] = {"name": "Pod Agent", "email": "pod-renamed@fleet.test"}
    stack.set_fleet(config)
    changed = stack.up()["agents"]["pod"]
    assert {key: changed[key] for key in ("host", "port", "known_hosts")} == {
        key: outputs["agents"]["pod"][key] for key in ("host", "port", "known_hosts")}
    assert pod_uid(kube_cluster, namespace, "pod") != before
    assert run_ok(client, "pod", "git config user.email; cat ~/workspace/mark").split() == [
        "pod-renamed@fleet.test", "kept"]


def test_a_second_up_changes_nothing(fleet):
    stack, _, _, _ = fleet
    preview = stack.stack.preview(on_output=lambda _: None)
    assert set(preview.change_summary) == {"same"}, preview.change_summary


def test_a_missing_storage_class_is_refused_naming_the_cluster_and_agents(kube_cluster, make_stack):
    namespace = f"refused-{uuid.uuid4().hex[:6]}"
    stack: FleetStack = make_stack("kube-refused")
    stack.set_fleet({
        "kubernetes": cluster_config(kube_cluster, namespace, storage_class="no-such-class"),
        "agents": [{"name": "pod", "backend": "kubernetes", "identity": {"name": "P", "email": "p@fleet.test"}}],
    })
    with pytest.raises(auto.CommandError) as refused:
        stack.stack.up(on_output=lambda _: None)
    message = str(refused.value)
    assert (f'stack "{stack.name}": cluster "kubernetes"' in message and "(agents pod)" in message
            and "field kubernetes.storage_class: no storage class no-such-class" in message), message
    assert f"namespace/{namespace}" not in kube_cluster.kubectl("get", "namespaces", "-o", "name").split()


def test_destroy_leaves_only_the_retained_workspace_and_up_takes_it_back(fleet, kube_cluster):
    stack, _, client, namespace = fleet
    run_ok(client, "keeper", "echo still-here > ~/workspace/mark")
    client.close()
    stack.destroy()
    left = kube_cluster.kubectl("get", "all,secrets,pvc", "-n", namespace, "-o", "name").split()
    assert left == [f"persistentvolumeclaim/agentfleet-{stack.name}-keeper-workspace"], left
    # The provisioner deletes the volume of the claim that went, and keeps the retained one's.
    deadline = time.monotonic() + 60
    while (volumes := volumes_of(kube_cluster, namespace)) != {f"agentfleet-{stack.name}-keeper-workspace": "Bound"}:
        assert time.monotonic() < deadline, volumes
        time.sleep(1)

    outputs = stack.up()
    with Fleet.from_outputs(outputs, stack.name) as again:
        assert run_ok(again, "keeper", "cat ~/workspace/mark") == "still-here"
    stack.destroy()


def volumes_of(cluster: Cluster, namespace: str) -> dict[str, str]:
    """The phase of each volume bound (or once bound) to a claim of the namespace, by claim."""
    return {pv["spec"]["claimRef"]["name"]: pv["status"]["phase"]
            for pv in json.loads(cluster.kubectl("get", "pv", "-o", "json"))["items"]
            if pv["spec"].get("claimRef", {}).get("namespace") == namespace}


def pod_uid(cluster: Cluster, namespace: str, agent: str) -> str:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", f"agentfleet.dev/agent={agent}",
                                      "-o", "json"))["items"]
    running = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]
    assert len(running) == 1, [pod["metadata"]["name"] for pod in pods]
    return running[0]["metadata"]["uid"]
