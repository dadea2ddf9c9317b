"""A fleet that mixes backends, under Pulumi mocks: one Docker and one Multipass agent.

The Multipass side is contract-tested, not booted: the mocks answer its VM with the endpoint its
driver reads back, and the preflight runs with a PATH the test sets (an empty directory, or a FAKE
`multipass` first), so the tests hold whether or not this machine has Multipass.
"""

from __future__ import annotations

from pathlib import Path

import pulumi
import pytest
import yaml

from components.backends.registry import preflight_problems
from components.project import fleet_config_key
from components.spec import load_fleet
from tests.unit.fleet_mocks import VM_ADDRESS, FleetMocks, mocks_for_module
from tests.key_marks import PRIVATE_KEY

MOCKS = FleetMocks()


@pytest.fixture(scope="module", autouse=True)
def mixed_fleet_mocks():
    """These mocks for this module only; whatever mocks were set before come back afterwards."""
    yield from mocks_for_module(MOCKS, "mixed")


SPEC = load_fleet("mixed", {
    "agents": [
        {"name": "agent-1", "identity": {"name": "One", "email": "one@example.com"},
         "ssh_port": 23001},
        {"name": "agent-3", "backend": "multipass", "image": "24.04",
         "identity": {"name": "Three", "email": "three@example.com"},
         "remote": "git@github.com:org/app.git",
         "resources": {"cpus": 2, "memory": "2g", "disk": 20}},
    ]
}, {}.get)
SECRET_SIG, SECRET_SIG_VALUE = pulumi.runtime.rpc._special_sig_key, pulumi.runtime.rpc._special_secret_sig


def fleet():
    from components.fleet import Fleet, FleetArgs

    return Fleet("fleet", FleetArgs(SPEC))


@pulumi.runtime.test
def test_outputs_keep_one_shape_whatever_the_backend():
    def check(agents):
        docker_agent, vm_agent = agents["agent-1"], agents["agent-3"]
        assert set(docker_agent) == set(vm_agent), "agent-1 (docker) and agent-3 (multipass) differ in keys"
        assert docker_agent["backend"] == "docker" and vm_agent["backend"] == "multipass"
        assert (vm_agent["host"], vm_agent["port"]) == (VM_ADDRESS, 22)
        # Port 22: known_hosts names the bare address, as OpenSSH writes it.
        assert vm_agent["known_hosts"].startswith(f"{VM_ADDRESS} ssh-ed25519 ")
        assert f"HostName {VM_ADDRESS}\n  Port 22\n" in vm_agent["ssh_config"]
        assert vm_agent["remote_public_key"].startswith("ssh-ed25519 ")

    return fleet().agents.apply(check)


@pulumi.runtime.test
def test_multipass_agent_is_one_vm_and_no_docker_parts():
    def check(_):
        names = set(MOCKS.resources)
        assert "agent-3-vm" in names, f"agent-3-vm missing from {sorted(names)}"
        assert not {"agent-3-workspace", "agent-3-container"} & names, sorted(names)
        assert {"agent-1-workspace", "agent-1-container", "agent-3-operator-key", "agent-3-host-key"} <= names
        vm = MOCKS.resources["agent-3-vm"]
        assert vm.typ.endswith(":MultipassVm")
        assert vm.inputs["launch"] == [
            "multipass", "launch", "--name", "agentfleet-mixed-agent-3", "--cpus", "2",
            "--memory", "2048M", "--disk", "20G", "--timeout", "900", "--cloud-init", "-", "24.04",
        ]
        assert vm.inputs["name"] == "agentfleet-mixed-agent-3" and vm.inputs["state"] == "running"
        # The cloud-config is the secret input (it goes on launch's stdin), never in the command line.
        secret = vm.inputs["secret"]
        assert secret[SECRET_SIG] == SECRET_SIG_VALUE and secret["value"].startswith("#cloud-config")
        assert not any(PRIVATE_KEY in arg for arg in vm.inputs["launch"])

    return fleet().agents.apply(check)


def test_preflight_names_the_multipass_agents_when_multipass_is_missing(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    problems = preflight_problems(SPEC)

    # Docker is reached through its API socket, not a CLI on PATH: only Multipass is missing.
    assert not any("backend docker" in p for p in problems), problems
    assert any(
        p.startswith('stack "mixed": backend multipass (agents agent-3) needs multipass '
                     "(install it: `sudo snap install multipass`)")
        for p in problems
    ), problems


def test_preflight_names_the_multipass_agents_when_its_daemon_is_down(tmp_path, monkeypatch):
    """With a FAKE `multipass` whose `version` answers without a multipassd line."""
    fake = tmp_path / "bin" / "multipass"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n# FAKE multipass: version with no daemon behind it\nprintf 'multipass   1.16.3\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{Path('/usr/bin')}:{Path('/bin')}")
    only_multipass = load_fleet("mixed", {"agents": [
        {"name": "agent-3", "backend": "multipass", "identity": {"name": "T", "email": "t@example.com"}},
        {"name": "agent-4", "backend": "multipass", "identity": {"name": "F", "email": "f@example.com"}},
    ]}, {}.get)

    problems = [p for p in preflight_problems(only_multipass) if "backend multipass" in p]

    assert problems and "(agents agent-3, agent-4)" in problems[0]
    assert "`sudo snap start multipass`" in problems[0]


def test_preflight_names_the_agents_of_a_backend_this_version_does_not_offer(monkeypatch):
    from components.backends import registry

    monkeypatch.setattr(registry, "MODULES", {k: v for k, v in registry.MODULES.items() if k != "multipass"})

    problems = [p for p in preflight_problems(SPEC) if "backend multipass" in p]

    assert problems == [
        'stack "mixed": backend multipass (agents agent-3) is not available in this version of '
        "agentfleet (available: docker, kubernetes, lima)"
    ]


def test_the_mixed_stack_example_is_a_valid_fleet_on_three_backends():
    example = Path(__file__).resolve().parents[2] / "stacks" / "Pulumi.mixed.yaml"
    config = yaml.safe_load(example.read_text())["config"]

    spec = load_fleet("mixed", config[fleet_config_key()], {}.get)

    assert spec.backends() == {"docker", "lima", "multipass"}
    assert [a.name for a in spec.agents if a.backend == "multipass"] == ["agent-3", "agent-4"]
