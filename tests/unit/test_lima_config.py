"""Lima backend, the pure parts: instance config from the spec, which cloud-init modules apply an
agent's document, the VM's inputs, where Lima is installed. No VM, no limactl."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.backends import MachineContext
from components.backends.lima import backend as lima
from components.backends.lima.driver import VmDriver, socket_path_problem
from components.cloudinit import AgentKeys, render_cloud_config
from components.keys import generate_ed25519
from components.spec import FleetConfigError, load_fleet
from tests.key_marks import PRIVATE_KEY

ROOT = Path(__file__).resolve().parents[2]
IMAGE = lima.VmImage(disk="/img/disk.qcow2", kernel="/img/vmlinuz", initrd="/img/initrd.img",
                     cmdline="root=/dev/vda1 ro console=ttyS0")
CONTEXT = MachineContext("lab")
REMOTE_KEY = generate_ed25519("remote")


def spec(**agent: object):
    entry = {"name": "agent-1", "backend": "lima", "identity": {"name": "One", "email": "one@fleet.test"},
             "ssh_port": 22700, **agent}
    return load_fleet("lab", {"agents": [entry]}, {"remoteKey": REMOTE_KEY[0]}.get).agents[0]


def document(agent) -> dict:
    keys = AgentKeys(
        operator_public_key=generate_ed25519("operator")[1],
        host_private_key=(host := generate_ed25519("host"))[0],
        host_public_key=host[1],
        remote_private_key=REMOTE_KEY[0] if agent.credential.kind == "ssh_key" else None,
    )
    return yaml.safe_load(render_cloud_config(agent, keys))


def test_instance_config_carries_the_spec_and_boots_the_built_image_with_its_kernel():
    agent = spec(resources={"cpus": 1.5, "memory": "1536m", "disk": 12})
    config = lima.instance_config(agent, IMAGE)
    assert config["cpus"] == 2 and config["memory"] == "1536MiB" and config["disk"] == "12GiB"
    assert config["images"] == [{
        "location": "/img/disk.qcow2", "arch": "x86_64",
        "kernel": {"location": "/img/vmlinuz", "cmdline": "root=/dev/vda1 ro console=ttyS0"},
        "initrd": {"location": "/img/initrd.img"},
    }]
    assert config["firmware"] == {"legacyBIOS": True}
    # Reached over SSH only, on the agent's own port; no mounts, no guest agent forwarding ports.
    assert config["ssh"]["localPort"] == 22700 and config["plain"] is True and config["mounts"] == []
    # A CPU type that runs under TCG as well as KVM; Lima's user does not take the agent's uid.
    assert config["cpuType"] == {"x86_64": "max"}
    assert config["user"]["uid"] != 1000
    # What Lima reads back is what was meant (YAML round trip of the rendered text).
    assert yaml.safe_load(lima.render_instance_config(config)) == config


def test_an_agent_image_is_taken_as_lima_image_location_without_kernel_or_firmware_override():
    config = lima.instance_config(spec(image="https://example.com/debian-12-genericcloud-amd64.qcow2"), IMAGE)
    assert config["images"] == [{"location": "https://example.com/debian-12-genericcloud-amd64.qcow2", "arch": "x86_64"}]
    assert "firmware" not in config


def test_no_image_at_all_is_an_error_saying_what_to_run():
    with pytest.raises(ValueError, match="run scripts/setup"):
        lima.instance_config(spec(), None)


def test_a_half_cpu_still_gets_one_whole_cpu():
    assert lima.instance_config(spec(resources={"cpus": 0.5}), IMAGE)["cpus"] == 1


def test_steps_for_the_default_document_follow_cloud_inits_boot_order():
    modules, scripts = lima.apply_steps(document(spec()))
    assert modules == ["bootcmd", "write_files", "users_groups", "ssh", "set_passwords", "runcmd",
                       "write_files_deferred", "scripts_user"]
    # The restricted egress policy is applied by its per-boot script, run once after the modules.
    assert scripts == ["/var/lib/cloud/scripts/per-boot/10-agentfleet-egress"]


def test_packages_add_the_package_module_and_open_egress_keeps_the_script_that_lifts_a_policy():
    modules, scripts = lima.apply_steps(document(spec(packages=["ripgrep"], egress="open")))
    assert modules.index("package_update_upgrade_install") == modules.index("runcmd") + 1
    assert scripts == ["/var/lib/cloud/scripts/per-boot/10-agentfleet-egress"]


def test_every_key_of_every_rendered_document_is_applied_by_some_module():
    variants = [spec(), spec(packages=["jq"], egress="open"),
                spec(remote="git@github.com:org/app.git", credential={"ssh_key": "remoteKey"})]
    for agent in variants:
        modules, _ = lima.apply_steps(document(agent))
        assert modules  # apply_steps raises on a key no module claims


def test_a_key_no_module_claims_is_refused_naming_where_to_add_it():
    with pytest.raises(ValueError, match="timezone.*MODULE_KEYS"):
        lima.apply_steps({"users": [], "timezone": "UTC"})


def test_the_vms_inputs_are_its_definition_and_carry_no_secret():
    agent = spec()
    keys = AgentKeys(operator_public_key=generate_ed25519("operator")[1],
                     host_private_key=(host := generate_ed25519("host"))[0], host_public_key=host[1])
    user_data = render_cloud_config(agent, keys)
    modules, scripts = lima.apply_steps(yaml.safe_load(user_data))

    inputs = {**lima.vm_fields(CONTEXT, agent, IMAGE), **lima.step_fields(user_data)}

    assert inputs["name"] == "agentfleet-lab-agent-1" and inputs["agent"] == "agent-1"
    assert inputs["state"] == "running"
    assert yaml.safe_load(inputs["config"]) == lima.instance_config(agent, IMAGE)
    assert yaml.safe_load(inputs["steps"]) == {"cloud_final_modules": [[m, "always"] for m in modules]}
    assert inputs["scripts"] == scripts
    # The cloud-config travels as the resource's one secret input; none of these holds any of it.
    text = json.dumps(inputs)
    assert PRIVATE_KEY not in text and "#cloud-config" not in text
    # What defines the VM replaces it; a stopped VM (state) is started in place.
    assert {"config", "steps", "scripts", "host_public_key"} <= VmDriver.replacing
    assert "state" not in VmDriver.replacing


def test_lima_forwards_ssh_on_loopback_only_so_another_bind_address_is_refused():
    # Refused by the spec, so before any resource of any agent exists.
    with pytest.raises(FleetConfigError, match='agent "agent-1", field "bind_address": Lima forwards SSH on 127.0.0.1 only'):
        spec(bind_address="0.0.0.0")


def test_socket_paths_too_long_for_lima_are_caught_before_anything_runs():
    assert socket_path_problem("/var/lib/agentfleet/lima/instances", "agentfleet-lab-agent-1") is None
    assert "shorter stack or agent name" in socket_path_problem("/x" * 40, "agentfleet-lab-agent-1")


def test_image_id_is_the_hash_setup_computes(tmp_path):
    recipe = tmp_path / "build-vm-image"
    recipe.write_text("#!/bin/sh\necho image\n")
    shell = subprocess.run(["sh", "-c", f"sha256sum {recipe} | cut -c1-16"], capture_output=True, text=True, check=True)
    assert lima.image_id(recipe) == shell.stdout.strip()
    assert lima.image_id() == lima.image_id(ROOT / "images/lima/build-vm-image")


def test_lima_is_found_where_setup_installs_it(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTFLEET_LIMA_DIR", str(tmp_path))
    assert lima.lima_dir() == tmp_path
    assert lima.local_image() is None
    image = tmp_path / "images" / lima.image_id()
    image.mkdir(parents=True)
    (image / "cmdline").write_text("root=/dev/vda1 ro\n")
    assert lima.local_image() is None  # not complete yet
    (image / ".complete").touch()
    assert lima.local_image() == lima.VmImage(str(image / "disk.qcow2"), str(image / "vmlinuz"),
                                              str(image / "initrd.img"), "root=/dev/vda1 ro")
    wrapper = tmp_path / "bin" / "limactl"
    wrapper.parent.mkdir()
    wrapper.write_text("#!/bin/sh\n")
    wrapper.chmod(0o755)
    assert lima.limactl_command() == str(wrapper)
    assert lima.lima_home(str(wrapper)) == str(tmp_path / "instances")


def test_a_machine_without_lima_fails_preflight_naming_the_agent_and_setup(tmp_path, monkeypatch):
    from components.backends.registry import preflight_problems

    only_python = tmp_path / "bin"
    only_python.mkdir()
    (only_python / "python3").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(only_python))
    monkeypatch.setenv("AGENTFLEET_LIMA_DIR", str(tmp_path / "lima"))
    fleet = load_fleet("lab", {"agents": [{"name": "agent-1", "backend": "lima",
                                           "identity": {"name": "One", "email": "one@fleet.test"}}]}, {}.get)

    (problem,) = preflight_problems(fleet)

    assert problem.startswith('stack "lab": backend lima (agents agent-1) needs limactl (run scripts/setup')
    assert "qemu-system-x86_64 (apt-get install qemu-system-x86 qemu-utils, or run scripts/setup)" in problem
