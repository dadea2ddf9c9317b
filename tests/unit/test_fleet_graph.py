"""The Fleet's resource graph under Pulumi mocks: which resources, with which commands and options."""

from __future__ import annotations

import json

import pulumi

from tests.unit.fleet_mocks import FleetMocks


MOCKS = FleetMocks()
pulumi.runtime.set_mocks(MOCKS, project="agentfleet", stack="unit")

from components.fleet import Fleet, FleetArgs  # noqa: E402  (mocks first)
from components.spec import load_fleet  # noqa: E402

SPEC = load_fleet("unit", {
    "agents": [
        {"name": "agent-1", "identity": {"name": "One", "email": "one@example.com"},
         "remote": "git@github.com:org/app.git", "ssh_port": 23001},
        {"name": "agent-2", "identity": {"name": "Two", "email": "two@example.com"},
         "retain_workspace": True, "resources": {"memory": "768m", "cpus": 2, "pids": 99}},
    ]
}, {}.get)


SECRET_SIG, SECRET_SIG_VALUE = pulumi.runtime.rpc._special_sig_key, pulumi.runtime.rpc._special_secret_sig


def create_argv(name: str) -> list[str]:
    return MOCKS.resources[name].inputs["create"]


@pulumi.runtime.test
def test_every_agent_gets_its_own_keys_machine_and_workspace():
    fleet = Fleet("fleet", FleetArgs(SPEC))

    def check(agents):
        names = set(MOCKS.resources)
        for agent in ("agent-1", "agent-2"):
            for part in ("operator-key", "host-key", "workspace", "container"):
                assert f"{agent}-{part}" in names, f"{agent}-{part} missing from {sorted(names)}"
        # Only an agent with an SSH remote and no given key gets a generated remote key.
        assert "agent-1-remote-key" in names and "agent-2-remote-key" not in names
        assert "fleet-network" in names
        assert agents["agent-1"]["port"] == 23001
        assert agents["agent-1"]["remote_public_key"].startswith("ssh-ed25519 ")

    return fleet.agents.apply(check)


@pulumi.runtime.test
def test_container_runs_least_privileged_on_a_private_port():
    fleet = Fleet("fleet", FleetArgs(SPEC))

    def check(_):
        argv = create_argv("agent-2-container")
        joined = " ".join(argv)
        assert "--cap-drop ALL" in joined and "--security-opt no-new-privileges" in joined
        assert "--privileged" not in argv and "docker.sock" not in joined
        assert "--memory 768m" in joined and "--cpus 2" in joined and "--pids-limit 99" in joined
        port = SPEC.agents[1].ssh_port
        assert f"--publish 127.0.0.1:{port}:22" in joined
        assert "--restart unless-stopped" in joined

    return fleet.agents.apply(check)


@pulumi.runtime.test
def test_cloud_config_travels_on_stdin_never_in_argv():
    fleet = Fleet("fleet", FleetArgs(SPEC))

    def check(_):
        container = MOCKS.resources["agent-1-container"]
        stdin = container.inputs["stdin"]
        # A secret reaches the provider wrapped with Pulumi's secret signature.
        assert stdin[SECRET_SIG] == SECRET_SIG_VALUE and stdin["value"].startswith("#cloud-config")
        assert "PRIVATE KEY" not in " ".join(container.inputs["create"])
        assert not any(arg.startswith(("-e", "--env", "--label=user")) for arg in container.inputs["create"])

    return fleet.agents.apply(check)


@pulumi.runtime.test
def test_private_keys_are_exported_as_secrets_only():
    fleet = Fleet("fleet", FleetArgs(SPEC))

    def check(args):
        is_secret, agents = args
        assert is_secret
        assert not any("PRIVATE KEY" in json.dumps(agent) for agent in agents.values())

    return pulumi.Output.all(fleet.agent_private_keys.is_secret(), fleet.agents).apply(check)
