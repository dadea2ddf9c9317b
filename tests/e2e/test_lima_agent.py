"""One Lima agent, end to end: real `pulumi up`, a real VM (qemu; software emulation where KVM
does not work), real cloud-init, sshd and git.

The VM reaches the git server of the Docker tests at its address on the Docker network: Lima's
user-mode network (slirp) makes the guest's connections from the host, which routes to Docker's
bridges. The agent authenticates with a key given in config (a Pulumi secret), so its workspace is
cloned on first boot, as a Docker agent's is. Needs what scripts/setup installs for Lima
(limactl, qemu, the VM image); a machine without them fails here with what to run. The VM is a
reconciled resource: stopped behind Pulumi's back (as by a host reboot), it is seen by the
refresh that precedes every `pulumi up` (Pulumi.yaml: `refresh: always`) and started again.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agentfleet import Fleet
from components.backends.lima import backend as lima
from components.keys import generate_ed25519
from tests.e2e.process_sampler import ProcessSampler, config_channel
from tests.e2e.support import FleetStack, GitServer
from tests.key_marks import PRIVATE_KEY_BEGIN

# A Lima agent under TCG boots in 1-2 minutes here; generous, bounded budgets on top.
COMMAND_TIMEOUT_S = 120
STOP_TIMEOUT_S = 300


def limactl() -> str:
    command = lima.limactl_command()
    missing = lima.BACKEND.missing_tools()
    if command is None or missing:
        pytest.fail(f"this machine cannot run Lima agents: needs {'; '.join(missing)}")
    return command


def lima_instances(command: str) -> list[dict[str, Any]]:
    listing = subprocess.run([command, "--tty=false", "list", "--json"], capture_output=True, text=True,
                             timeout=60, check=True)
    return [json.loads(line) for line in listing.stdout.splitlines() if line.strip()]


def fleet_config(git: GitServer) -> dict[str, Any]:
    return {
        "agents": [{
            "name": "agent-1",
            "backend": "lima",
            "identity": {"name": "Lima Agent", "email": "lima-agent@fleet.test"},
            "remote": git.url,
            "known_hosts": [git.known_hosts_line],
            "credential": {"ssh_key": "limaRemoteKey"},
            "resources": {"cpus": 2, "memory": "1g", "disk": 4},
        }],
    }


@pytest.fixture(scope="module")
def during_up() -> ProcessSampler:
    """Every process's arguments and environment while the fleet's `pulumi up` runs."""
    return ProcessSampler()


@pytest.fixture(scope="module")
def fleet(git_server: GitServer, make_stack, during_up: ProcessSampler):
    command = limactl()
    stack: FleetStack = make_stack("lima")
    instance = f"agentfleet-{stack.name}-agent-1"
    remote_private, remote_public = generate_ed25519("lima-agent-deploy-key")
    git_server.authorize(remote_public)
    stack.set_secret("limaRemoteKey", remote_private)
    stack.set_fleet(fleet_config(git_server))
    started = time.monotonic()
    try:
        with during_up:
            outputs = stack.up()
        print(f"\nLima agent up in {time.monotonic() - started:.0f} s")
        with Fleet.from_outputs(outputs, stack.name) as client:
            yield stack, outputs, client, command, instance, remote_private
    finally:
        # Whatever happened above: no VM of this stack outlives the tests.
        for leftover in lima_instances(command):
            if leftover["name"].startswith(f"agentfleet-{stack.name}-"):
                subprocess.run([command, "--tty=false", "delete", "--force", leftover["name"]],
                               capture_output=True, timeout=120, check=False)


def run_ok(client: Fleet, command: str) -> str:
    """Run in the agent's workspace (where the client starts every command); demand success."""
    result = client.agent("agent-1").run(command, timeout=COMMAND_TIMEOUT_S)
    assert result.ok, f"agent-1: `{command}` exited {result.exit_status}: {result.stderr}"
    return result.stdout.strip()


def test_the_lima_agent_has_the_outputs_of_any_agent(fleet):
    _, outputs, _, command, instance, _ = fleet
    agent = outputs["agents"]["agent-1"]
    assert agent["backend"] == "lima" and agent["host"] == "127.0.0.1" and agent["user"] == "agent"
    assert agent["known_hosts"].startswith(f"[127.0.0.1]:{agent['port']} ssh-ed25519 ")
    assert PRIVATE_KEY_BEGIN in outputs["agent_private_keys"]["agent-1"]
    # The endpoint is the port Lima forwards for this instance.
    (listed,) = [i for i in lima_instances(command) if i["name"] == instance]
    assert listed["status"] == "Running" and listed["sshLocalPort"] == agent["port"]


def test_the_agent_reports_its_identity_and_runs_unprivileged_in_its_own_kernel(fleet):
    _, _, client, _, _, _ = fleet
    assert run_ok(client, "git config user.name") == "Lima Agent"
    assert run_ok(client, "git config user.email") == "lima-agent@fleet.test"
    assert run_ok(client, "pwd") == "/home/agent/workspace"
    assert run_ok(client, "id -u") == "1000"
    # No path to root: no sudo, no group that administers the VM (sudo, adm, systemd-journal, …).
    assert not client.agent("agent-1").run("sudo -n true", timeout=COMMAND_TIMEOUT_S).ok
    assert run_ok(client, "id -Gn") == "agent"
    assert run_ok(client, "uname -r") != os.uname().release


def test_the_agent_cloned_its_remote_commits_and_pushes_its_branch(fleet, git_server: GitServer):
    _, _, client, _, _, _ = fleet
    # Cloned at first boot with the configured key, on the agent's branch.
    assert run_ok(client, "git rev-parse --abbrev-ref HEAD") == "agent/agent-1"
    assert run_ok(client, "cat README") == "shared project"
    run_ok(client, "echo from-a-vm > lima.txt && git add lima.txt && "
                   "git commit -q -m 'work of the Lima agent' && git push -q origin HEAD")
    assert git_server.branch_authors()["agent/agent-1"] == "<lima-agent@fleet.test>"


def test_the_cloud_config_is_in_no_host_file_argv_or_lima_config(fleet, during_up: ProcessSampler):
    stack, _, _, command, instance, remote_private = fleet
    # The first body line is the same for every OpenSSH ed25519 key; the rest is the key.
    secret_lines = remote_private.strip().splitlines()[2:-1]
    # During `up` (limactl create/start, the document on limactl shell's stdin), sampled as Docker's is:
    assert during_up.saw_its_marker(), "the sampler missed the short process it planted during up"
    _, channel = config_channel()  # where the language host hands over the configuration, if anywhere
    for needle in ("#cloud-config\nusers:", *secret_lines):
        holders = during_up.holders(needle.encode(), except_variables=channel)
        assert not holders, f"{needle[:20]!r} was in a process's arguments or environment during up: {holders}"
    (listed,) = [i for i in lima_instances(command) if i["name"] == instance]
    texts = {"ps": subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout,
             "pulumi stack export": stack.export()}
    for name in ("lima.yaml", "ha.stderr.log", "serial.log"):
        texts[name] = (Path(listed["dir"]) / name).read_text(errors="replace")
    for where, text in texts.items():
        assert "#cloud-config\nusers:" not in text.replace("\\n", "\n"), f"the cloud-config is in {where}"
        for line in secret_lines:
            assert line not in text, f"a private key is readable in {where}"


def test_a_vm_stopped_with_limactl_is_started_by_up_and_answers_with_its_pinned_key(fleet):
    stack, outputs, client, command, instance, _ = fleet
    client.close()
    subprocess.run([command, "--tty=false", "stop", instance], capture_output=True, text=True,
                   timeout=STOP_TIMEOUT_S, check=True)
    (listed,) = [i for i in lima_instances(command) if i["name"] == instance]
    assert listed["status"] == "Stopped"

    preview = stack.stack.preview(on_output=lambda _: None, diff=True)
    assert preview.change_summary.get("update") == 1 and "replace" not in preview.change_summary
    assert '"stopped" => "running"' in preview.stdout

    started = time.monotonic()
    healed = stack.up()
    print(f"\nLima agent started again in {time.monotonic() - started:.0f} s")
    assert healed == outputs, "same endpoint, same pinned host key"
    (listed,) = [i for i in lima_instances(command) if i["name"] == instance]
    assert listed["status"] == "Running"
    # The client trusts only the pinned key: answering at all proves it. The disk kept the work.
    with Fleet.from_outputs(healed, stack.name) as again:
        result = again.agent("agent-1").run("git log -1 --format=%s", timeout=COMMAND_TIMEOUT_S)
        assert result.ok and result.stdout.strip() == "work of the Lima agent", result.stderr
    assert set(stack.stack.preview(on_output=lambda _: None).change_summary) == {"same"}


def test_a_vm_restarted_behind_pulumis_back_has_its_policy_before_anyone_can_log_in(fleet):
    """After a reboot (here `limactl stop` and `start`, as a host reboot would), the egress table is
    loaded before sshd starts, not in cloud-init's final stage 15-30 s after logins work."""
    stack, _, client, command, instance, _ = fleet
    client.close()
    for verb in ("stop", "start"):
        subprocess.run([command, "--tty=false", verb, instance], capture_output=True, text=True,
                       timeout=STOP_TIMEOUT_S, check=True)
    # At once, while cloud-init's final stage may still run (Lima returns from `start` before it):
    table = subprocess.run([command, "--tty=false", "shell", instance, "sudo", "nft", "list", "table",
                            "inet", "agentfleet"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert table.returncode == 0 and "chain output" in table.stdout, table.stderr
    # And systemd says why: the table's unit had finished when sshd was started.
    def timestamp(unit: str, prop: str) -> int:
        shown = subprocess.run([command, "--tty=false", "shell", instance, "systemctl", "show", "--value",
                                "--property", prop, unit], capture_output=True, text=True,
                               timeout=COMMAND_TIMEOUT_S, check=True)
        return int(shown.stdout.strip())

    early_done = timestamp("agentfleet-egress-early.service", "ExecMainExitTimestampMonotonic")
    assert 0 < early_done <= timestamp("ssh.service", "ExecMainStartTimestampMonotonic")
    assert set(stack.stack.preview(on_output=lambda _: None).change_summary) == {"same"}
    with Fleet.from_outputs(stack.outputs(), stack.name) as again:
        result = again.agent("agent-1").run("git log -1 --format=%s", timeout=COMMAND_TIMEOUT_S)
        assert result.ok and result.stdout.strip() == "work of the Lima agent", result.stderr


def test_a_changed_identity_and_allow_list_are_applied_in_place_in_the_running_vm(fleet, git_server: GitServer):
    """The provider's update path for Lima: the new cloud-config is applied in the VM (cloud-init's
    own modules over Lima's SSH session), the VM is neither replaced nor restarted."""
    stack, outputs, _, command, instance, _ = fleet
    (before,) = [i for i in lima_instances(command) if i["name"] == instance]
    config = fleet_config(git_server)
    config["agents"][0].update(identity={"name": "Lima Agent Two", "email": "lima-two@fleet.test"},
                               allow=["pypi.org:443"])
    stack.set_fleet(config)

    preview = stack.stack.preview(on_output=lambda _: None)
    assert preview.change_summary.get("update") == 1 and "replace" not in preview.change_summary, preview.change_summary
    started = time.monotonic()
    changed = stack.up()
    print(f"\nLima agent changed in place in {time.monotonic() - started:.0f} s")

    agent = changed["agents"]["agent-1"]
    assert (agent["host"], agent["port"], agent["known_hosts"]) == tuple(
        outputs["agents"]["agent-1"][k] for k in ("host", "port", "known_hosts"))
    (after,) = [i for i in lima_instances(command) if i["name"] == instance]
    assert after["status"] == "Running" and after["dir"] == before["dir"]
    with Fleet.from_outputs(changed, stack.name) as client:
        assert run_ok(client, "git config user.email") == "lima-two@fleet.test"
        assert run_ok(client, "git config user.name") == "Lima Agent Two"
        assert run_ok(client, "git log -1 --format=%s") == "work of the Lima agent"  # the disk is the same
        # Up since before the change: applied in the running VM, not by a reboot.
        assert float(run_ok(client, "cut -d' ' -f1 /proc/uptime")) > time.monotonic() - started
    assert set(stack.stack.preview(on_output=lambda _: None).change_summary) == {"same"}


def test_destroy_leaves_no_instance_and_no_disk(fleet):
    stack, _, client, command, instance, _ = fleet
    (listed,) = [i for i in lima_instances(command) if i["name"] == instance]
    directory = Path(listed["dir"])
    assert (directory / "diffdisk").exists()
    client.close()
    stack.destroy()
    assert [i["name"] for i in lima_instances(command) if i["name"].startswith(f"agentfleet-{stack.name}-")] == []
    assert not directory.exists()
