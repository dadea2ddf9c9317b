"""components/backends/kubernetes/backend.py: the pod an agent runs in, without a cluster."""

from __future__ import annotations

from components.backends.kubernetes.backend import SEED_MOUNT, KubernetesAgentArgs, meta_data, pod_spec
from components.spec import load_fleet


# What sshd and cloud-init need as root in the agent (as in Docker), plus NET_ADMIN for the egress
# policy; written here, not imported, so that a change to the code's list shows up as a failure.
POD_CAPABILITIES = ["CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE", "DAC_OVERRIDE", "FOWNER", "NET_ADMIN"]


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
    # Root in the pod keeps NET_ADMIN whatever `egress` says, so a policy change applies in place.
    assert security["capabilities"] == {"drop": ["ALL"], "add": POD_CAPABILITIES}
    assert security["allowPrivilegeEscalation"] is False and security["privileged"] is False
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "1024Mi"}
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False


def test_restricted_egress_adds_only_net_admin_to_what_sshd_and_cloud_init_need() -> None:
    (container,) = pod_spec(args(), "seed", "claim")["containers"]
    assert container["securityContext"]["capabilities"]["add"] == POD_CAPABILITIES


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
