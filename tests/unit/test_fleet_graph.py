"""The Fleet's resource graph under Pulumi mocks: which resources, with which commands and options."""

from __future__ import annotations

import json

import pulumi

from tests.unit.fleet_mocks import APP_TOKEN, APP_TOKEN_EXPIRES, FleetMocks
from tests.unit.github_api import app_key_pair


MOCKS = FleetMocks()
pulumi.runtime.set_mocks(MOCKS, project="agentfleet", stack="unit")

from components.fleet import Fleet, FleetArgs  # noqa: E402  (mocks first)
from components.spec import load_fleet  # noqa: E402
from tests.key_marks import PRIVATE_KEY

SPEC = load_fleet("unit", {
    "agents": [
        {"name": "agent-1", "identity": {"name": "One", "email": "one@example.com"},
         "remote": "git@github.com:org/app.git", "ssh_port": 23001},
        {"name": "agent-2", "identity": {"name": "Two", "email": "two@example.com"},
         "retain_workspace": True, "resources": {"memory": "768m", "cpus": 2, "pids": 99}},
    ]
}, {}.get)


SECRET_SIG, SECRET_SIG_VALUE = pulumi.runtime.rpc._special_sig_key, pulumi.runtime.rpc._special_secret_sig


def inputs(name: str) -> dict:
    return MOCKS.resources[name].inputs


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
        container = inputs("agent-2-container")
        # No NET_ADMIN: the egress policy is its policy container's, given as data (no scripts).
        assert container["capabilities"] == sorted(
            ["AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "SYS_CHROOT"])
        # Declared, not rendered: the files are made from it where they are uploaded (policy.py).
        assert set(container["egress"]) == {"code", "agent", "destinations"}
        assert "table inet agentfleet" not in json.dumps(container["egress"]) and len(json.dumps(container["egress"])) < 200
        assert (container["memory_mib"], container["cpus"], container["pids"]) == (768, 2, 99)
        # No port or bind address in the config: both are chosen on the agent's host when it is made.
        assert "port" not in container and "bind_address" not in container
        assert container["preferred_port"] == SPEC.agents[1].preferred_port
        assert (container["placement"], container["engines"]["local"]["endpoint_address"]) == ("local", "127.0.0.1")
        assert inputs("agent-1-container")["port"] == 23001  # given in the config: kept as given
        assert container["restart"] == "unless-stopped" and container["state"] == "running"
        assert container["workspace_volume"] == "agentfleet-unit-agent-2-workspace"
        # The image's init is PID 1; privileges and the Docker socket are not fields at all.
        assert not any("privileged" in key or "docker.sock" in str(value) for key, value in container.items())

    return fleet.agents.apply(check)


@pulumi.runtime.test
def test_cloud_config_is_the_one_secret_input_and_no_script_is_an_input():
    fleet = Fleet("fleet", FleetArgs(SPEC))

    def check(_):
        container = inputs("agent-1-container")
        secret = container["secret"]
        # A secret reaches the provider wrapped with Pulumi's secret signature.
        assert secret[SECRET_SIG] == SECRET_SIG_VALUE and secret["value"].startswith("#cloud-config")
        plain = json.dumps({k: v for k, v in container.items() if k != "secret"})
        assert PRIVATE_KEY not in plain and "#cloud-config" not in plain
        # What defines the machine, not how it is made: no script text among the inputs.
        assert not any(isinstance(v, str) and ("set -e" in v or "\n" in v) for v in container.values())

    return fleet.agents.apply(check)


@pulumi.runtime.test
def test_private_keys_are_exported_as_secrets_only():
    fleet = Fleet("fleet", FleetArgs(SPEC))

    def check(args):
        is_secret, agents = args
        assert is_secret
        assert not any(PRIVATE_KEY in json.dumps(agent) for agent in agents.values())

    return pulumi.Output.all(fleet.agent_private_keys.is_secret(), fleet.agents).apply(check)


@pulumi.runtime.test
def test_with_a_github_app_the_forge_output_carries_each_tokens_expiry_and_no_token():
    """`exec` compares its own record with the expiry of the token `up` wrote (agentfleet/apptokens.py)."""
    private, _ = app_key_pair()
    spec = load_fleet("unit", {
        "forge": {"kind": "github", "repository": "org/app",
                  "app": {"id": 1, "installation": 2, "private_key": "appKey"}},
        "agents": [{"name": "agent-3", "identity": {"name": "Three", "email": "three@example.com"},
                    "remote": "https://github.com/org/app.git"}],
    }, {"appKey": private}.get)
    fleet = Fleet("app-fleet", FleetArgs(spec))

    def check(args):
        is_secret, forge = args
        assert is_secret and forge["token"] == "" and APP_TOKEN not in json.dumps(forge)
        assert forge["app"]["agents"] == ["agent-3"] and forge["app"]["expires"] == {"agent-3": APP_TOKEN_EXPIRES}

    assert fleet.forge is not None
    return pulumi.Output.all(fleet.forge.is_secret(), fleet.forge).apply(check)
