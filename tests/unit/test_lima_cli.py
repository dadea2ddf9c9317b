"""Lima backend, the VM's driver against recorded limactl outputs.

tests/unit/fixtures/lima/ holds real outputs of limactl 1.2.1 run here (see its README). The
pure functions are checked against them; the driver of the VM resource (`lima.driver.VmDriver`:
create, read, update, delete, and the resource's provider on top of it) runs against a FAKE
limactl first on PATH that keeps its instances' states, records its argv and stdin and replays
those outputs. The readiness wait is real: the fake's `list --json` reports the port where the
throwaway sshd of tests/conftest.py offers the key.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from agentfleet.throttle import held_for
from components.backends import MachineContext
from components.backends.lima import backend as lima
from components.backends.lima import driver as lima_driver
from components.backends.lima.driver import (
    START_TIMEOUT_S,
    Lima,
    LimaError,
    VmDriver,
    boot_state,
    explain,
    find_instance,
    parse_list,
    readable_log,
    ssh_endpoint,
    wait_for_boot,
)
from components.cloudinit import AgentKeys, render_cloud_config
from components.keys import generate_ed25519
from components.provider.kinds import driver
from components.reconciled import Reconciler, digest
from components.spec import load_fleet
from tests.key_marks import PRIVATE_KEY

FIXTURES = Path(__file__).parent / "fixtures" / "lima"
RECORDED = "agentfleet-rec-agent-1"
RECORDED_DIR = f"/var/lib/agentfleet/lima/instances/{RECORDED}"

AGENT = load_fleet("lab", {"agents": [
    {"name": "agent-1", "backend": "lima", "identity": {"name": "One", "email": "one@fleet.test"}},
]}, {}.get).agents[0]
CONTEXT = MachineContext("lab")
INSTANCE = CONTEXT.machine_name(AGENT.name)


def recorded(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())["result"]


# --- pure functions against the recorded outputs -------------------------------------------------


def test_list_json_is_one_object_per_instance_line():
    assert parse_list(recorded("list-empty")["stdout"]) == []
    assert [i["name"] for i in parse_list(recorded("list-two")["stdout"])] == [RECORDED, "agentfleet-rec-agent-2"]
    assert find_instance(recorded("list-two")["stdout"], "agentfleet-rec-agent-2")["status"] == "Stopped"
    assert find_instance(recorded("list-empty")["stdout"], RECORDED) is None


def test_the_endpoint_of_a_running_instance_is_the_forwarded_ssh_port_on_loopback():
    running = find_instance(recorded("list-running")["stdout"], RECORDED)
    assert ssh_endpoint(running) == {"host": "127.0.0.1", "port": 22611}


def test_a_stopped_instance_has_no_endpoint_though_lima_lists_its_port():
    stopped = find_instance(recorded("list-stopped")["stdout"], RECORDED)
    assert stopped["sshLocalPort"] == 22611
    with pytest.raises(LimaError, match="is Stopped"):
        ssh_endpoint(stopped)


@pytest.mark.parametrize("case, says", [
    ("root-refused", "runs Lima as agentfleet-lima"),
    ("start-timeout", "did not boot to SSH in time"),
    ("create-exists", "limactl delete --force"),
])
def test_recorded_failures_map_to_what_to_do(case, says):
    result = recorded(case)
    assert result["exit_status"] != 0
    assert says in explain(result["stderr"])


def test_a_taken_port_shows_only_in_the_host_agent_log_which_says_it():
    # `limactl start` itself only says the host agent exited; its log names the qemu failure.
    assert explain(recorded("start-port-taken")["stderr"]) is None
    log = readable_log((FIXTURES / "ha-port-taken.stderr.log").read_text())
    assert "Could not set up host forwarding rule 'tcp:127.0.0.1:22611-:22'" in log
    assert "SSH port is taken" in explain(log)


def test_deleting_a_missing_instance_succeeds_in_lima_1_2():
    assert recorded("delete-missing")["exit_status"] == 0
    assert "Ignoring non-existent instance" in recorded("delete-missing")["stderr"]


# --- the driver against a FAKE limactl ----------------------------------------------------------

FAKE_LIMACTL = '''#!{python}
"""FAKE limactl for agentfleet's tests: keeps its instances' states, records argv and stdin,
replays recorded outputs."""
import json, sys, time
from pathlib import Path

here = Path(__file__).resolve().parent
scenario = json.loads((here / "scenario.json").read_text())
args = [a for a in sys.argv[1:] if a != "--tty=false"]
stdin = sys.stdin.read()
with open(here / "calls.jsonl", "a") as log:
    log.write(json.dumps({{"argv": args, "stdin": stdin}}) + "\\n")
state = here / "instances.json"
instances = json.loads(state.read_text()) if state.exists() else {{}}


def answer(case, name):
    state.write_text(json.dumps(instances))
    result = json.loads((Path({fixtures!r}) / (case + ".json")).read_text())["result"]
    out = result["stdout"].replace({recorded_dir!r}, str(here / name))
    sys.stdout.write(out.replace({recorded!r}, name).replace("22611", str(scenario["port"])))
    sys.stderr.write(result["stderr"].replace({recorded!r}, name))
    sys.exit(result["exit_status"])


command = args[0]
if command == "list":
    if scenario.get("list"):
        answer(scenario["list"], "")
    if not instances:
        answer("list-empty", "")
    name, status = next(iter(instances.items()))
    answer("list-running" if status == "Running" else "list-stopped", name)
if command == "create":
    name = args[args.index("--name") + 1]
    if name in instances:
        answer("create-exists", name)
    instances[name] = "Stopped"
    (here / name).mkdir(exist_ok=True)
    answer("create-ok", name)
if command == "start":
    name = args[-1]
    case = scenario.get("start", "start-ok")
    if case != "start-port-taken":
        instances[name] = "Running"  # a start that timed out leaves the VM booting
    if scenario.get("ha_log"):
        (here / name / "ha.stderr.log").write_text((Path({fixtures!r}) / scenario["ha_log"]).read_text())
    answer(case, name)
if command == "shell" and "agentfleet-boot" in args:  # the boot wait: the statuses in turn
    waits = here / "boot-waits"
    done = int(waits.read_text()) if waits.exists() else 0
    waits.write_text(str(done + 1))
    states = scenario.get("boot", ["active"])
    state = states[min(done, len(states) - 1)]
    if state == "hang":
        time.sleep(60)
    sys.stdout.write("cloud-final: %s\\n" % state)
    if state == "failed":
        sys.stdout.write("status: error\\ndetail:\\n('scripts_per_boot', RuntimeError('runparts: 1 failures'))\\n")
    sys.exit(0)
if command == "shell":
    sys.stderr.write(scenario.get("shell_stderr", ""))
    sys.exit(scenario.get("shell_exit", 0))
if command == "delete":
    name = args[-1]
    if instances.pop(name, None) is None:
        answer("delete-missing", name)
    answer("delete-ok", name)
sys.stderr.write("FAKE limactl: unexpected arguments %r\\n" % (args,))
sys.exit(1)
'''


class FakeLimactl:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = str(directory / "limactl")
        self.configure()

    def configure(self, **scenario: object) -> None:
        (self.directory / "scenario.json").write_text(json.dumps({"port": 22611, **scenario}))

    def calls(self) -> list[dict]:
        log = self.directory / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def commands(self) -> list[str]:
        return [call["argv"][0] for call in self.calls()]

    def instances(self) -> dict:
        state = self.directory / "instances.json"
        return json.loads(state.read_text()) if state.exists() else {}

    def holds(self, **instances: str) -> None:
        """Instances that exist before the test (name: status), as Lima would list them."""
        (self.directory / "instances.json").write_text(json.dumps(instances))


@pytest.fixture
def fake_limactl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeLimactl:
    directory = tmp_path / "fake-lima"
    directory.mkdir()
    executable = directory / "limactl"
    executable.write_text(FAKE_LIMACTL.format(python=sys.executable, fixtures=str(FIXTURES),
                                              recorded=RECORDED, recorded_dir=RECORDED_DIR))
    executable.chmod(0o755)
    # No Lima of setup's here: the driver takes the limactl on PATH, which is the fake.
    monkeypatch.setenv("AGENTFLEET_LIMA_DIR", str(tmp_path / "no-lima"))
    monkeypatch.setenv("PATH", f"{directory}:{os.environ['PATH']}")
    return FakeLimactl(directory)


@pytest.fixture(scope="module")
def cloud_config() -> str:
    keys = AgentKeys(operator_public_key=generate_ed25519("operator")[1],
                     host_private_key=generate_ed25519("host")[0], host_public_key=generate_ed25519("host")[1])
    return render_cloud_config(AGENT, keys)


IMAGE = lima.VmImage("/img/disk.qcow2", "/img/vmlinuz", "/img/initrd.img", "root=/dev/vda1")


def fields(cloud_config: str, host_public_key: str = "ssh-ed25519 AAAAunused") -> dict:
    """The VM's inputs as the backend declares them (without the secret cloud-config)."""
    return {**lima.vm_fields(CONTEXT, AGENT, IMAGE), **lima.step_fields(cloud_config),
            "host_public_key": host_public_key}


def test_create_starts_the_vm_applies_the_cloud_config_over_limas_ssh_and_waits_for_the_pinned_key(
    fake_limactl, local_sshd, cloud_config
):
    port = local_sshd.ports["agent-1"]
    fake_limactl.configure(port=port)
    declared = fields(cloud_config, local_sshd.host_key.public)

    made = VmDriver(ready_timeout_s=30).create(INSTANCE, declared, cloud_config)

    assert made == {"host": "127.0.0.1", "port": port, "state": "running"}
    # After `limactl start`, the boot wait, then the document: in that order.
    assert fake_limactl.commands() == ["list", "create", "start", "list", "shell", "shell"]
    _, created, started, _, boot, shell = fake_limactl.calls()
    assert created["argv"] == ["create", "--name", INSTANCE, "-"] and created["stdin"] == declared["config"]
    assert yaml.safe_load(created["stdin"])["plain"] is True
    assert started["argv"] == ["start", "--timeout", f"{START_TIMEOUT_S}s", INSTANCE]
    assert boot["argv"][:6] == ["shell", "--workdir", "/", INSTANCE, "sudo", "sh"]
    assert "cloud-final.service" in boot["argv"][7] and boot["stdin"] == ""
    # The document reaches the guest on the shell's stdin, as root, with the module list.
    assert shell["stdin"] == cloud_config
    assert shell["argv"][:6] == ["shell", "--workdir", "/", INSTANCE, "sudo", "sh"]
    assert "cloud-init" in shell["argv"][7] and declared["steps"] in shell["argv"]
    # The secret is in no command line and in no input of the VM but the secret one.
    for text in [json.dumps(declared), *(json.dumps(call["argv"]) for call in fake_limactl.calls())]:
        assert PRIVATE_KEY not in text and "#cloud-config" not in text
    assert fake_limactl.instances() == {INSTANCE: "Running"}


def test_the_document_that_clones_waits_for_a_slot_of_the_remote_host_the_boot_does_not(
    fake_limactl, local_sshd, cloud_config
):
    fake_limactl.configure(port=local_sshd.ports["agent-1"])
    gate = {"host": "forge.lab.test", "connections": 1}
    declared = {**fields(cloud_config, local_sshd.host_key.public), "forge_gate": gate}
    made: list[dict] = []
    creating = threading.Thread(target=lambda: made.append(VmDriver(ready_timeout_s=30).create(
        INSTANCE, declared, cloud_config)))

    with held_for(gate):  # the host's one slot, taken (another agent's first clone)
        creating.start()
        deadline = time.monotonic() + 20
        while fake_limactl.commands() != ["list", "create", "start", "list", "shell"] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        # Booted and waited for its boot, but the document (its first clone) is not applied.
        assert fake_limactl.commands() == ["list", "create", "start", "list", "shell"]
    creating.join(30)

    assert made and made[0]["state"] == "running"
    assert fake_limactl.commands()[-1] == "shell" and fake_limactl.calls()[-1]["stdin"] == cloud_config


@pytest.mark.parametrize("scenario, says", [
    ({"start": "start-timeout"}, "did not boot to SSH in time"),
    ({"start": "start-port-taken", "ha_log": "ha-port-taken.stderr.log"}, "SSH port is taken"),
    ({"shell_exit": 1, "shell_stderr": "cloud-init could not apply the cloud-config\n"},
     "`limactl shell` exited 1"),
])
def test_a_failed_create_deletes_the_half_made_vm_and_names_the_agent(fake_limactl, cloud_config, scenario, says):
    fake_limactl.configure(**scenario)

    with pytest.raises(LimaError) as failure:
        VmDriver().create(INSTANCE, fields(cloud_config), cloud_config)

    message = str(failure.value)
    assert f"agent agent-1 (Lima VM {INSTANCE}): " in message and says in message
    assert "the half-made VM was deleted" in message
    assert fake_limactl.commands()[-1] == "delete" and fake_limactl.instances() == {}


def test_an_unreachable_sshd_is_a_timeout_naming_the_endpoint(fake_limactl, cloud_config):
    fake_limactl.configure(port=9)  # nothing answers there

    with pytest.raises(LimaError, match=r"sshd on 127.0.0.1:9 did not offer the pinned host key within 1s "
                                        r"\(last: no SSH answer\); the half-made VM was deleted"):
        VmDriver(ready_timeout_s=1).create(INSTANCE, fields(cloud_config), cloud_config)
    assert fake_limactl.instances() == {}


def test_an_instance_left_by_someone_else_is_not_touched(fake_limactl, cloud_config):
    fake_limactl.holds(**{INSTANCE: "Stopped"})

    with pytest.raises(LimaError, match=rf"exists already.*`{fake_limactl.path} delete --force {INSTANCE}`"):
        VmDriver().create(INSTANCE, fields(cloud_config), cloud_config)
    assert fake_limactl.commands() == ["list"] and fake_limactl.instances() == {INSTANCE: "Stopped"}


def test_missing_limactl_says_to_run_setup(fake_limactl, cloud_config, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(LimaError, match=r"agent agent-1 .*limactl is missing .*run scripts/setup"):
        VmDriver().create(INSTANCE, fields(cloud_config), cloud_config)
    with pytest.raises(LimaError, match=r"agent agent-1 .*limactl is missing .*run scripts/setup"):
        VmDriver().read(INSTANCE, fields(cloud_config))
    assert fake_limactl.calls() == []


def test_delete_removes_the_instance_and_tolerates_one_already_gone(fake_limactl, cloud_config):
    fake_limactl.holds(**{INSTANCE: "Running"})
    VmDriver().delete(INSTANCE, fields(cloud_config))
    assert fake_limactl.instances() == {}
    VmDriver().delete(INSTANCE, fields(cloud_config))  # Lima says it ignores it; still a success
    assert fake_limactl.commands() == ["delete", "delete"]


def test_missing_qemu_says_what_to_install_before_anything_starts(fake_limactl, cloud_config, tmp_path, monkeypatch):
    only_python = tmp_path / "bin"
    only_python.mkdir()
    (only_python / "python3").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", f"{fake_limactl.directory}:{only_python}")

    with pytest.raises(LimaError, match=r"agent agent-1 .*qemu-system-x86_64 is missing: apt-get install "
                                        r"qemu-system-x86 qemu-utils \(or run scripts/setup\)"):
        VmDriver().create(INSTANCE, fields(cloud_config), cloud_config)
    assert fake_limactl.commands() == []


# --- refresh and up: the resource's provider on the driver --------------------------------------


def state_after_up(cloud_config: str, host_public_key: str = "ssh-ed25519 AAAAunused", port: int = 22611) -> dict:
    """The VM's outputs in the stack's state after `pulumi up`, as agentfleet's provider wrote them."""
    return {**fields(cloud_config, host_public_key), "host": "127.0.0.1", "port": port,
            "secret": digest(cloud_config)}


def test_refresh_of_a_running_vm_changes_nothing(fake_limactl, cloud_config):
    fake_limactl.holds(**{INSTANCE: "Running"})

    read = Reconciler(driver("LimaVm")).read(INSTANCE, state_after_up(cloud_config))

    assert read.id == INSTANCE and read.outs == state_after_up(cloud_config) and read.inputs is None


def test_refresh_of_a_missing_instance_reads_as_gone(fake_limactl, cloud_config):
    read = Reconciler(driver("LimaVm")).read(INSTANCE, state_after_up(cloud_config))

    assert read.id is None  # Pulumi drops the VM from the state; `pulumi up` creates it again
    assert fake_limactl.commands() == ["list"]


def test_refresh_that_limactl_refuses_fails_naming_the_agent_and_the_fix(fake_limactl, cloud_config):
    fake_limactl.configure(list="root-refused")

    with pytest.raises(LimaError, match=rf"agent agent-1 \(Lima VM {INSTANCE}\): `limactl list` exited 1: "
                                        r"limactl refuses root"):
        Reconciler(driver("LimaVm")).read(INSTANCE, state_after_up(cloud_config))


def test_a_stopped_vm_reads_as_stopped_and_up_starts_it_and_waits_for_its_pinned_key(
    fake_limactl, local_sshd, cloud_config
):
    port = local_sshd.ports["agent-1"]
    fake_limactl.configure(port=port)
    fake_limactl.holds(**{INSTANCE: "Stopped"})
    provider = Reconciler(driver("LimaVm"))
    key = local_sshd.host_key.public

    read = provider.read(INSTANCE, state_after_up(cloud_config, key, port))
    assert read.outs["state"] == "stopped" and read.outs["port"] == port
    assert read.inputs["state"] == "stopped" and "secret" not in read.inputs
    # The next `pulumi up`: the state differs from the declaration, and it is changed in place.
    declared = {**fields(cloud_config, key), "secret": cloud_config}
    planned = provider.diff(read.outs, declared)
    assert planned.changes and planned.replaces == []

    started = VmDriver(ready_timeout_s=30).update(INSTANCE, fields(cloud_config, key), cloud_config)

    assert started == {"host": "127.0.0.1", "port": port, "state": "running"}
    # Started, not rebuilt: no create; the declared cloud-config is handed over once more (the
    # apply script leaves a document it applied already as it is).
    assert fake_limactl.commands() == ["list", "list", "start", "list", "shell", "shell"]
    assert "agentfleet-boot" in fake_limactl.calls()[4]["argv"]  # the boot finished before the key was asked
    assert fake_limactl.calls()[2]["argv"] == ["start", "--timeout", f"{START_TIMEOUT_S}s", INSTANCE]
    assert fake_limactl.instances() == {INSTANCE: "Running"}


def test_a_started_vm_that_never_offers_its_pinned_key_is_an_error_and_is_kept(fake_limactl, cloud_config):
    fake_limactl.configure(port=9)  # nothing answers there
    fake_limactl.holds(**{INSTANCE: "Stopped"})

    with pytest.raises(LimaError, match=rf"agent agent-1 \(Lima VM {INSTANCE}\): sshd on 127.0.0.1:9 did not "
                                        r"offer the pinned host key within 1s"):
        VmDriver(ready_timeout_s=1).update(INSTANCE, fields(cloud_config), cloud_config)
    assert fake_limactl.instances() == {INSTANCE: "Running"}  # its disk holds the workspace


def test_up_after_the_vm_was_deleted_creates_it_anew(fake_limactl, local_sshd, cloud_config):
    port = local_sshd.ports["agent-1"]
    fake_limactl.configure(port=port)

    made = VmDriver(ready_timeout_s=30).update(INSTANCE, fields(cloud_config, local_sshd.host_key.public),
                                               cloud_config)

    assert made == {"host": "127.0.0.1", "port": port, "state": "running"}
    assert fake_limactl.commands() == ["list", "list", "create", "start", "list", "shell", "shell"]


# --- the boot wait: cloud-init's boot finishes after `limactl start` returns ------------------------


def test_the_boot_state_is_the_one_the_wait_printed():
    assert boot_state("cloud-final: active\n") == "active"
    assert boot_state("cloud-final: failed\nstatus: error\n") == "failed"
    assert boot_state("cloud-final: \n") == boot_state("") == "unknown"


def test_the_boot_wait_asks_again_until_cloud_final_has_run(fake_limactl):
    fake_limactl.configure(boot=["activating", "activating", "active"])
    wait_for_boot(Lima(fake_limactl.path, "agent-1", INSTANCE), timeout_s=30, poll_s=1)
    assert [call["argv"][-1] for call in fake_limactl.calls()] == ["1", "1", "1"]  # seconds each waits in the VM


def test_a_boot_wait_that_does_not_return_is_given_up_and_asked_again(fake_limactl, monkeypatch):
    # Its session opened just as the boot loaded the egress policy: the next one is tracked.
    monkeypatch.setattr(lima_driver, "BOOT_GRACE_S", 1)
    fake_limactl.configure(boot=["hang", "active"])
    wait_for_boot(Lima(fake_limactl.path, "agent-1", INSTANCE), timeout_s=30, poll_s=1)
    assert fake_limactl.commands() == ["shell", "shell"]


def test_a_boot_that_does_not_finish_fails_the_create_naming_the_agent_and_deletes_the_vm(fake_limactl, cloud_config):
    fake_limactl.configure(boot=["activating"])

    with pytest.raises(LimaError) as failure:
        VmDriver(boot_timeout_s=2).create(INSTANCE, fields(cloud_config), cloud_config)

    message = str(failure.value)
    assert (f"agent agent-1 (Lima VM {INSTANCE}): cloud-init's boot in the VM did not finish within 2s after "
            "`limactl start` (cloud-final.service: activating); the half-made VM was deleted") in message
    assert "agentfleet-apply" not in json.dumps(fake_limactl.calls())  # the document was never sent
    assert fake_limactl.instances() == {}


def test_a_failed_boot_fails_the_start_naming_the_agent_with_cloud_inits_status_and_keeps_the_vm(
    fake_limactl, cloud_config
):
    fake_limactl.holds(**{INSTANCE: "Stopped"})
    fake_limactl.configure(boot=["failed"])

    with pytest.raises(LimaError) as failure:
        VmDriver().update(INSTANCE, fields(cloud_config), cloud_config)

    message = str(failure.value)
    assert (f"agent agent-1 (Lima VM {INSTANCE}): cloud-init's boot in the VM failed (cloud-final.service "
            "failed): see /var/log/cloud-init.log in the VM") in message
    assert "runparts: 1 failures" in message  # cloud-init's own account, above
    assert fake_limactl.commands()[-1] == "shell" and fake_limactl.instances() == {INSTANCE: "Running"}
