"""Lima backend, the create/delete program against recorded limactl outputs.

tests/unit/fixtures/lima/ holds real outputs of limactl 1.2.1 run here (see its README). The
pure functions are checked against them; the real create and delete commands run through
LocalCommand's own code path (`components.command.run_command`) against a FAKE limactl that
records its argv and stdin and replays those outputs. The readiness wait is real: the fake's
`list --json` reports the port where the throwaway sshd of tests/conftest.py offers the key.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from components.backends import MachineContext, lima, parse_endpoint
from components.backends.lima_cli import (
    LimaError,
    explain,
    find_instance,
    parse_list,
    readable_log,
    ssh_endpoint,
)
from components.cloudinit import AgentKeys, render_cloud_config
from components.command import CommandFailed, run_command
from components.keys import generate_ed25519
from components.spec import load_fleet

ROOT = Path(__file__).resolve().parents[2]
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


# --- the real commands against a FAKE limactl ------------------------------------------------------

FAKE_LIMACTL = '''#!{python}
"""FAKE limactl for agentfleet's tests: records argv and stdin, replays recorded outputs."""
import json, sys
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
if command == "shell":
    sys.stderr.write(scenario.get("shell_stderr", ""))
    sys.exit(scenario.get("shell_exit", 0))
if command == "delete":
    name = args[-1]
    instances.pop(name, None)
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


@pytest.fixture
def fake_limactl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeLimactl:
    directory = tmp_path / "fake-lima"
    directory.mkdir()
    executable = directory / "limactl"
    executable.write_text(FAKE_LIMACTL.format(python=sys.executable, fixtures=str(FIXTURES),
                                              recorded=RECORDED, recorded_dir=RECORDED_DIR))
    executable.chmod(0o755)
    monkeypatch.chdir(ROOT)  # Pulumi runs providers (so LocalCommand) in the project directory
    return FakeLimactl(directory)


@pytest.fixture(scope="module")
def cloud_config() -> str:
    keys = AgentKeys(operator_public_key=generate_ed25519("operator")[1],
                     host_private_key=generate_ed25519("host")[0], host_public_key=generate_ed25519("host")[1])
    return render_cloud_config(AGENT, keys)


def commands(fake: FakeLimactl, host_public_key: str, cloud_config: str) -> tuple[list[str], list[str]]:
    modules, scripts = lima.apply_steps(yaml.safe_load(cloud_config))
    image = lima.VmImage("/img/disk.qcow2", "/img/vmlinuz", "/img/initrd.img", "root=/dev/vda1")
    config = lima.render_instance_config(lima.instance_config(AGENT, image))
    create, delete = lima.machine_commands(CONTEXT, AGENT, host_public_key, fake.path, config, modules, scripts)
    assert create[8] == str(lima.READY_TIMEOUT_S)
    create[8] = "30"  # the pinned-key wait: bounded for tests
    return create, delete


def test_create_starts_the_vm_applies_the_cloud_config_over_limas_ssh_and_waits_for_the_pinned_key(
    fake_limactl, local_sshd, cloud_config
):
    port = local_sshd.ports["agent-1"]
    fake_limactl.configure(port=port)
    create, _ = commands(fake_limactl, local_sshd.host_key.public, cloud_config)

    stdout = run_command("creating agent-1-vm", create, cloud_config)

    assert parse_endpoint(stdout) == {"host": "127.0.0.1", "port": port}
    assert fake_limactl.commands() == ["list", "create", "start", "list", "shell"]
    _, made, started, _, shell = fake_limactl.calls()
    assert made["argv"] == ["create", "--name", INSTANCE, "-"] and yaml.safe_load(made["stdin"])["plain"] is True
    assert started["argv"] == ["start", "--timeout", f"{lima.START_TIMEOUT_S}s", INSTANCE]
    # The document reaches the guest on the shell's stdin, as root, with the module list.
    assert shell["stdin"] == cloud_config
    assert shell["argv"][:6] == ["shell", "--workdir", "/", INSTANCE, "sudo", "sh"]
    assert "cloud-init --file" in shell["argv"][7] and "cloud_final_modules" in shell["argv"][9]
    # The secret is in no command line: not LocalCommand's, not any limactl call's.
    for argv in [create, *(call["argv"] for call in fake_limactl.calls())]:
        assert not any("PRIVATE KEY" in arg or "#cloud-config" in arg for arg in argv)
    assert fake_limactl.instances() == {INSTANCE: "Running"}


@pytest.mark.parametrize("scenario, says", [
    ({"start": "start-timeout"}, "did not boot to SSH in time"),
    ({"start": "start-port-taken", "ha_log": "ha-port-taken.stderr.log"}, "SSH port is taken"),
    ({"shell_exit": 1, "shell_stderr": "cloud-init could not apply the cloud-config\n"},
     "`limactl shell` exited 1"),
])
def test_a_failed_create_deletes_the_half_made_vm_and_names_the_agent(fake_limactl, cloud_config, scenario, says):
    fake_limactl.configure(**scenario)
    create, _ = commands(fake_limactl, "ssh-ed25519 AAAAunused", cloud_config)

    with pytest.raises(CommandFailed) as failure:
        run_command("creating agent-1-vm", create, cloud_config)

    message = str(failure.value)
    assert f"agent agent-1 (Lima VM {INSTANCE}): " in message and says in message
    assert "the half-made VM was deleted" in message
    assert fake_limactl.commands()[-1] == "delete" and fake_limactl.instances() == {}


def test_an_unreachable_sshd_is_a_timeout_naming_the_endpoint(fake_limactl, cloud_config):
    fake_limactl.configure(port=9)  # nothing answers there
    create, _ = commands(fake_limactl, "ssh-ed25519 AAAAunused", cloud_config)
    create[8] = "1"

    with pytest.raises(CommandFailed, match=r"sshd on 127.0.0.1:9 did not offer the pinned host key within 1s"):
        run_command("creating agent-1-vm", create, cloud_config)
    assert fake_limactl.instances() == {}


def test_an_instance_left_by_someone_else_is_not_touched(fake_limactl, cloud_config):
    (fake_limactl.directory / "instances.json").write_text(json.dumps({INSTANCE: "Stopped"}))
    create, _ = commands(fake_limactl, "ssh-ed25519 AAAAunused", cloud_config)

    with pytest.raises(CommandFailed, match=rf"exists already.*`{fake_limactl.path} delete --force {INSTANCE}`"):
        run_command("creating agent-1-vm", create, cloud_config)
    assert fake_limactl.commands() == ["list"] and fake_limactl.instances() == {INSTANCE: "Stopped"}


def test_missing_limactl_says_to_run_setup(fake_limactl, cloud_config, tmp_path):
    create, _ = commands(fake_limactl, "ssh-ed25519 AAAAunused", cloud_config)
    create[5] = str(tmp_path / "nowhere" / "limactl")
    with pytest.raises(CommandFailed, match="agent agent-1 .*limactl is missing .*run scripts/setup"):
        run_command("creating agent-1-vm", create, cloud_config)


def test_delete_removes_the_instance_and_tolerates_one_already_gone(fake_limactl):
    (fake_limactl.directory / "instances.json").write_text(json.dumps({INSTANCE: "Running"}))
    _, delete = commands(fake_limactl, "ssh-ed25519 AAAAunused", "#cloud-config\n{}\n")
    run_command("deleting agent-1-vm", delete, None)
    assert fake_limactl.instances() == {}
    run_command("deleting agent-1-vm", delete, None)
    assert fake_limactl.commands() == ["delete", "delete"]


def test_missing_qemu_says_what_to_install_before_anything_starts(fake_limactl, cloud_config, tmp_path, monkeypatch):
    only_python = tmp_path / "bin"
    only_python.mkdir()
    (only_python / "python3").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(only_python))
    create, _ = commands(fake_limactl, "ssh-ed25519 AAAAunused", cloud_config)

    with pytest.raises(CommandFailed, match=r"agent agent-1 .*qemu-system-x86_64 is missing: apt-get install "
                                            r"qemu-system-x86 qemu-utils \(or run scripts/setup\)"):
        run_command("creating agent-1-vm", create, cloud_config)
    assert fake_limactl.commands() == []
