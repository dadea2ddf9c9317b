"""components/backends/kubernetes/backend.py: the pod an agent runs in, without a cluster."""

from __future__ import annotations

import json

from agentfleet.contract import DENIED_RECORD
from components.backends.kubernetes.backend import (
    SEED_MOUNT,
    KubernetesAgentArgs,
    meta_data,
    pod_spec,
    policy_files,
    policy_secret_data,
)
from components.backends.kubernetes.preflight import _sidecar_problems, server_version
from components.egress import EgressPolicy
from components.process import Completed
from components.spec import load_fleet


# What sshd and cloud-init need as root in the agent (as in Docker), nothing that changes the
# network; written here, not imported, so that a change to the code's list shows up as a failure.
POD_CAPABILITIES = ["CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE", "DAC_OVERRIDE", "FOWNER"]


def args(**fields) -> KubernetesAgentArgs:
    raw = {"agents": [{"name": "agent-1", "identity": {"name": "A", "email": "a@example.com"}, **fields}]}
    agent = load_fleet("Dev_1", raw, {}.get).agents[0]
    return KubernetesAgentArgs(agent=agent, stack="Dev_1", namespace="agents", image="agentfleet/agent:x",
                               node_address="10.0.0.1")


def test_names_are_dns_labels_unique_per_stack_and_short_enough_for_pod_names() -> None:
    assert args().machine_name == "agentfleet-dev-1-agent-1"
    long = args(name="a" * 32)
    assert len(long.machine_name) <= 47 and not long.machine_name.endswith("-")


def test_pod_drops_privileges_like_docker() -> None:
    spec = pod_spec(args(egress="open", resources={"cpus": 2, "memory": "1g"}), "seed", "claim")
    (container,) = spec["containers"]
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": POD_CAPABILITIES}
    assert security["allowPrivilegeEscalation"] is False and security["privileged"] is False
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "1024Mi"}
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False


def test_open_egress_has_no_policy_container() -> None:
    spec = pod_spec(args(egress="open"), "seed", "claim")
    assert "initContainers" not in spec
    assert [v["name"] for v in spec["volumes"]] == ["seed", "workspace"]


def test_restricted_egress_runs_in_a_native_sidecar_the_agent_cannot_reach() -> None:
    spec = pod_spec(args(allow=["example.com:443"]), "seed", "claim", "the-policy-secret")
    (agent,) = spec["containers"]
    (policy,) = spec["initContainers"]
    # The agent holds nothing that changes the network; the sidecar only NET_ADMIN, and restarts.
    assert agent["securityContext"]["capabilities"]["add"] == POD_CAPABILITIES
    assert policy["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert policy["securityContext"]["allowPrivilegeEscalation"] is False
    assert policy["restartPolicy"] == "Always" and "startupProbe" in policy
    assert "env" not in policy and "args" not in policy and "shareProcessNamespace" not in spec
    volumes = {v["name"]: v for v in spec["volumes"]}
    # The policy's files reach the sidecar alone, as the mounted Secret, where apply-egress finds them.
    mounted = {}
    for mount in policy["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret:
            assert secret["secretName"] == "the-policy-secret" and mount["readOnly"] is True
            mounted.update({f"{mount['mountPath']}/{item['path']}": item["key"] for item in secret["items"]})
    assert mounted == {path: path.rsplit("/", 1)[1] for path in policy_files(args(allow=["example.com:443"]).agent)}
    assert {"/etc/agentfleet/egress.nft", "/usr/local/lib/agentfleet/resolver",
            "/usr/local/lib/agentfleet/apply-egress"} <= set(mounted)
    assert not {m["name"] for m in agent["volumeMounts"]} & {n for n, v in volumes.items() if "secret" in v
                                                             and v["secret"]["secretName"] == "the-policy-secret"}
    # The record of refusals: the sidecar writes it, the agent reads it where `audit --denied` looks.
    record_dir = DENIED_RECORD.rsplit("/", 1)[0]
    (agent_record,) = [m for m in agent["volumeMounts"] if m["mountPath"] == record_dir]
    (policy_record,) = [m for m in policy["volumeMounts"] if m["mountPath"] == record_dir]
    assert agent_record["readOnly"] is True and not policy_record.get("readOnly")
    assert agent_record["name"] == policy_record["name"] and "emptyDir" in volumes[agent_record["name"]]


def test_the_policy_secret_holds_the_table_names_servers_and_code() -> None:
    agent = args(allow=["example.com:443"], dns=["10.0.0.53"]).agent
    data = policy_secret_data(agent)
    assert data["egress.nft"] == EgressPolicy.of(agent).ruleset()
    assert json.loads(data["egress.json"])["names"] == [{"name": "example.com", "protocol": "tcp", "port": 443}]
    assert data["dns-servers"] == "10.0.0.53\n"
    assert {"apply-egress", "resolver", "agentfleet_denied.py"} <= set(data)


def test_preflight_refuses_restricted_egress_without_native_sidecars() -> None:
    agents = [args().agent, args(name="free", egress="open").agent]
    old = Completed(0, json.dumps({"major": "1", "minor": "28+"}), "")
    (problem,) = _sidecar_problems("cluster c", agents, old)
    assert "runs Kubernetes 1.28" in problem and "agents agent-1 " in problem and "1.29 or later" in problem
    assert _sidecar_problems("cluster c", agents[1:], old) == []
    assert _sidecar_problems("cluster c", agents, Completed(0, json.dumps({"major": "1", "minor": "34"}), "")) == []
    assert server_version("not json") is None


def test_cloud_config_reaches_the_pod_only_as_the_mounted_secret() -> None:
    spec = pod_spec(args(), "the-seed-secret", "claim")
    (container,) = spec["containers"]
    assert "env" not in container and "envFrom" not in container
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[SEED_MOUNT]["readOnly"] is True
    seed = next(v for v in spec["volumes"] if v["name"] == mounts[SEED_MOUNT]["name"])
    assert seed["secret"] == {"secretName": "the-seed-secret", "defaultMode": 0o400}


def test_meta_data_names_instance_and_host() -> None:
    assert meta_data(args()) == "instance-id: agentfleet-dev-1-agent-1\nlocal-hostname: agent-1\n"
