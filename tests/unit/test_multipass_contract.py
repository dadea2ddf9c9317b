"""Multipass backend: contract-tested, not booted.

Multipass ships only as a snap and cannot be installed on these machines. So these tests hold
the backend to Multipass' CLI contract as its source defines it (tests/unit/fixtures/multipass/,
written in that format, see its README):

- the pure functions (commands, `multipass info --format json` parsing, error explanations)
  against the written outputs;
- the driver of the VM resource (`multipass.driver.VmDriver`: create, read, update, delete, and
  the resource's provider on top of it) against a FAKE `multipass` executable first on PATH that
  keeps its instances' states, records its argv and stdin and replays those outputs. The
  readiness wait is real: the fake's `info` reports 127.0.0.1, and the driver waits on the port
  where the throwaway sshd of tests/conftest.py offers the pinned key.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pulumi
import pytest

from components.backends import MachineContext
from components.backends.multipass import backend as multipass
from components.backends.multipass.driver import (
    MultipassError,
    VmDriver,
    daemon_answers,
    explain_error,
    instance_name_problem,
    launch_argv,
    parse_info,
    parse_state,
)
from components.cloudinit import AgentKeys, render_cloud_config
from components.keys import generate_ed25519
from components.provider.kinds import driver as driver_of
from components.reconciled import Reconciler, digest
from components.spec import load_fleet
from tests.key_marks import PRIVATE_KEY

FIXTURES = Path(__file__).parent / "fixtures" / "multipass"
FIXTURE_INSTANCE = "agentfleet-mixed-agent-3"
FIXTURE_IP = "10.108.7.23"
NEW_IP = "10.108.7.42"  # info-new-address

SPEC = load_fleet("mixed", {
    "agents": [
        {"name": "agent-3", "backend": "multipass", "image": "24.04",
         "identity": {"name": "Three", "email": "three@example.com"},
         "remote": "git@github.com:org/app.git",
         "resources": {"cpus": 1.5, "memory": "768m", "disk": 12}},
    ]
}, {}.get)
AGENT = SPEC.agents[0]
CONTEXT = MachineContext("mixed")
INSTANCE = CONTEXT.machine_name(AGENT.name)


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())["result"]


# --- pure functions against the written outputs -------------------------------------------------


def test_contract_launch_argv_carries_the_spec_and_reads_the_cloud_config_from_stdin():
    argv = launch_argv(INSTANCE, cpus=1.5, memory_mib=768, disk_gib=12, image="24.04")
    assert argv == [
        "multipass", "launch", "--name", INSTANCE, "--cpus", "2", "--memory", "768M",
        "--disk", "12G", "--timeout", "900", "--cloud-init", "-", "24.04",
    ]
    assert launch_argv(INSTANCE, 0.5, 512, 10)[-1] == "lts"
    assert launch_argv(INSTANCE, 0.5, 512, 10)[launch_argv(INSTANCE, 0.5, 512, 10).index("--cpus") + 1] == "1"
    # The written launch fixtures were made for this very command line.
    assert fixture("launch-ok")["command"] == " ".join(
        launch_argv(FIXTURE_INSTANCE, cpus=2, memory_mib=768, disk_gib=12)
    )
    # The VM's inputs are that command line: the spec, not a script.
    assert multipass.vm_fields(CONTEXT, AGENT)["launch"] == argv


def test_contract_info_json_of_a_running_instance_gives_its_first_ipv4_on_port_22():
    assert parse_info(fixture("info-running")["stdout"], FIXTURE_INSTANCE) == {
        "host": FIXTURE_IP, "port": 22,
    }


@pytest.mark.parametrize("text, name, expected", [
    (fixture("info-deleted")["stdout"], FIXTURE_INSTANCE, "is Deleted, not Running"),
    (fixture("info-stopped")["stdout"], FIXTURE_INSTANCE, "is Stopped, not Running"),
    (fixture("info-running")["stdout"], "agentfleet-mixed-other", "no instance agentfleet-mixed-other"),
    ("", FIXTURE_INSTANCE, "printed no JSON"),
    ('{"errors": [], "list": []}', FIXTURE_INSTANCE, "without an `info` mapping"),
    ('{"errors": ["boom"], "info": {}}', FIXTURE_INSTANCE, "no instance agentfleet-mixed-agent-3: boom"),
    ('{"errors": [], "info": {"%s": {"state": "Running", "ipv4": []}}}' % FIXTURE_INSTANCE,
     FIXTURE_INSTANCE, "no IPv4 address yet"),
])
def test_contract_info_json_that_gives_no_endpoint_is_an_error_saying_why(text, name, expected):
    with pytest.raises(MultipassError, match=expected):
        parse_info(text, name)


@pytest.mark.parametrize("case, expected", [
    ("info-running", {"state": "running", "host": FIXTURE_IP, "port": 22}),
    ("info-new-address", {"state": "running", "host": NEW_IP, "port": 22}),
    # No address while stopped: the state read back keeps the last one it knew.
    ("info-stopped", {"state": "stopped", "port": 22}),
    ("info-deleted", {"state": "deleted", "port": 22}),
])
def test_contract_refresh_reads_state_and_address_from_info_json(case, expected):
    assert parse_state(fixture(case)["stdout"], FIXTURE_INSTANCE) == expected


def test_contract_info_json_without_the_instance_is_no_state_but_an_error():
    with pytest.raises(MultipassError, match="printed no usable JSON"):
        parse_state(fixture("info-running")["stdout"], "agentfleet-mixed-other")


@pytest.mark.parametrize("case, says", [
    ("launch-daemon-down", "`sudo snap start multipass`"),
    ("info-daemon-down", "`sudo snap start multipass`"),
    ("delete-daemon-down", "`sudo snap start multipass`"),
    ("info-missing", "`multipass list`"),
    ("launch-timeout", "run `pulumi up` again"),
    ("launch-init-timeout", "run `pulumi up` again"),
    ("launch-exists", f"`multipass delete --purge {FIXTURE_INSTANCE}`"),
])
def test_contract_each_documented_failure_maps_to_one_actionable_sentence(case, says):
    result = fixture(case)
    assert result["exit_status"] != 0 and result["stdout"] == ""
    sentence = explain_error(result["stderr"])
    assert says in sentence
    assert "\n" not in sentence and sentence.endswith(".")


def test_contract_daemon_state_is_read_from_the_multipassd_line_of_version():
    assert daemon_answers(fixture("version-daemon-up")["stdout"])
    # `multipass version` exits 0 without a daemon: its exit status tells nothing.
    assert fixture("version-daemon-down")["exit_status"] == 0
    assert not daemon_answers(fixture("version-daemon-down")["stdout"])


def test_contract_instance_names_follow_multipass_rules():
    assert instance_name_problem("agentfleet-mixed-agent-3") is None
    assert "letters, digits and hyphens" in instance_name_problem("agentfleet-my_stack-agent-1")
    assert instance_name_problem("a" * 64) is not None
    # A stack whose name Multipass would refuse fails the program before any resource exists.
    with pytest.raises(pulumi.RunError, match='stack "my_stack", agent "agent-3": .* not a Multipass instance name'):
        multipass.BACKEND.provision(AGENT, MachineContext("my_stack"), None, None, None)


# --- the driver against a FAKE multipass --------------------------------------------------------

FAKE_MULTIPASS = '''#!{python}
"""FAKE multipass for agentfleet's contract tests: keeps its instances' states, records argv
and stdin, replays written outputs."""
import json, sys
from pathlib import Path

import yaml

here = Path(__file__).resolve().parent
scenario = json.loads((here / "scenario.json").read_text())
args = sys.argv[1:]
stdin = sys.stdin.read()
with open(here / "calls.jsonl", "a") as log:
    log.write(json.dumps({{"argv": args, "stdin": stdin}}) + "\\n")
state = here / "instances.json"
instances = json.loads(state.read_text()) if state.exists() else {{}}


def answer(case, name):
    state.write_text(json.dumps(instances))
    result = json.loads((Path({fixtures!r}) / (case + ".json")).read_text())["result"]
    sys.stdout.write(result["stdout"].replace({instance!r}, name).replace({ip!r}, scenario["ip"]))
    sys.stderr.write(result["stderr"].replace({instance!r}, name))
    sys.exit(result["exit_status"])


command = args[0] if args else ""
if command == "version":
    answer(scenario["version"], "")
if command == "launch":
    name = args[args.index("--name") + 1]
    if args[args.index("--cloud-init") + 1] == "-":
        try:  # Multipass parses the user-data as YAML before sending it to the daemon.
            yaml.safe_load(stdin)
        except yaml.YAMLError as error:
            sys.stderr.write("Could not load cloud-init configuration: %s\\n" % error)
            sys.exit(1)
    case = "launch-exists" if name in instances else scenario["launch"]
    if case != "launch-daemon-down":
        instances.setdefault(name, "Running")  # a launch that timed out leaves its instance behind
    answer(case, name)
if command == "info":
    name = args[1]
    by_state = {{"Running": scenario["running_info"], "Stopped": "info-stopped", "Deleted": "info-deleted"}}
    answer(scenario.get("info") or by_state.get(instances.get(name), "info-missing"), name)
if command == "start" and instances.get(args[1]) == "Stopped":
    instances[args[1]] = "Running"
    answer("start-ok", args[1])
if command == "exec" and instances.get(args[1]) == "Running":
    sys.exit(0)  # the in-place apply (components/reapply.py); what it sends is in calls.jsonl
if command == "delete" and args[1] == "--purge":
    name = args[2]
    if scenario.get("delete"):
        answer(scenario["delete"], name)
    if name in instances:
        del instances[name]
        answer("delete-ok", name)
    answer("delete-missing", name)
sys.stderr.write("FAKE multipass: unexpected arguments %r\\n" % (args,))
sys.exit(1)
'''


class FakeMultipass:
    """A FAKE `multipass` first on PATH; `calls()` is every invocation with its argv and stdin."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.configure()

    def configure(self, **scenario: object) -> None:
        merged = {"version": "version-daemon-up", "launch": "launch-ok", "running_info": "info-running",
                  "ip": "127.0.0.1", **scenario}
        (self.directory / "scenario.json").write_text(json.dumps(merged))

    def calls(self) -> list[dict]:
        log = self.directory / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def commands(self) -> list[list[str]]:
        return [call["argv"][:2] for call in self.calls()]

    def instances(self) -> dict[str, str]:
        state = self.directory / "instances.json"
        return json.loads(state.read_text()) if state.exists() else {}

    def holds(self, **instances: str) -> None:
        """Instances that exist before the test (name: state), as Multipass would keep them."""
        (self.directory / "instances.json").write_text(json.dumps(instances))


@pytest.fixture
def fake_multipass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeMultipass:
    directory = tmp_path / "fake-bin"
    directory.mkdir()
    executable = directory / "multipass"
    executable.write_text(FAKE_MULTIPASS.format(
        python=sys.executable, fixtures=str(FIXTURES), instance=FIXTURE_INSTANCE, ip=FIXTURE_IP,
    ))
    executable.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}:{os.environ['PATH']}")
    return FakeMultipass(directory)


@pytest.fixture(scope="module")
def cloud_config() -> str:
    keys = AgentKeys(
        operator_public_key=generate_ed25519("operator")[1],
        host_private_key=generate_ed25519("host")[0],
        host_public_key=generate_ed25519("host")[1],
        remote_private_key=generate_ed25519("remote")[0],
    )
    text = render_cloud_config(AGENT, keys)
    assert PRIVATE_KEY in text
    return text


def fields(host_public_key: str = "ssh-ed25519 AAAAunused") -> dict:
    """The VM's inputs as the backend declares them (without the secret cloud-config)."""
    return {**multipass.vm_fields(CONTEXT, AGENT), "host_public_key": host_public_key}


def driver(port: int = 22, ready_timeout_s: float = 10) -> VmDriver:
    return VmDriver(ready_timeout_s=ready_timeout_s, ssh_port=port)


def test_contract_create_launches_with_the_spec_and_cloud_config_on_stdin_then_waits_for_the_pinned_key(
    fake_multipass, local_sshd, cloud_config
):
    port = local_sshd.ports["agent-1"]

    made = driver(port).create(INSTANCE, fields(local_sshd.host_key.public), cloud_config)

    assert made == {"host": "127.0.0.1", "port": port, "state": "running"}
    # Whether a deleted instance holds the name, then the launch, then where it answers.
    assert fake_multipass.commands() == [["info", INSTANCE], ["launch", "--name"], ["info", INSTANCE]]
    _, launch, info = fake_multipass.calls()
    assert launch["stdin"] == cloud_config and info["stdin"] == ""
    assert launch["argv"] == [
        "launch", "--name", INSTANCE, "--cpus", "2", "--memory", "768M", "--disk", "12G",
        "--timeout", "900", "--cloud-init", "-", "24.04",
    ]
    assert info["argv"] == ["info", INSTANCE, "--format", "json"]
    # The secret is in no command line: not in the VM's inputs, not in any multipass call.
    for argv in [fields()["launch"], *(call["argv"] for call in fake_multipass.calls())]:
        assert not any(PRIVATE_KEY in arg or "#cloud-config" in arg for arg in argv)
    assert fake_multipass.instances() == {INSTANCE: "Running"}


@pytest.mark.parametrize("scenario, multipass_said, advice", [
    ({"launch": "launch-timeout"}, "Timed out waiting for instance launch.", "run `pulumi up` again"),
    ({"launch": "launch-init-timeout"}, "timed out waiting for initialization to complete", "run `pulumi up` again"),
    # The daemon went away during the launch: the purge fails too, and says what to run.
    ({"launch": "launch-timeout", "delete": "delete-daemon-down"},
     "Timed out waiting for instance launch.", "run `pulumi up` again"),
    # The client's timer fired while the daemon was still preparing: nothing to purge yet.
    ({"launch": "launch-timeout", "delete": "delete-missing"},
     "Timed out waiting for instance launch.", "run `pulumi up` again"),
])
def test_contract_failed_launch_purges_the_vm_and_names_the_agent(
    fake_multipass, cloud_config, scenario, multipass_said, advice
):
    fake_multipass.configure(**scenario)

    with pytest.raises(MultipassError) as failure:
        driver().create(INSTANCE, fields(), cloud_config)

    message = str(failure.value)
    assert f"agent agent-3 (Multipass instance {INSTANCE}): launch failed." in message
    assert multipass_said in message and advice in message
    assert fake_multipass.calls()[-1]["argv"] == ["delete", "--purge", INSTANCE]
    if scenario.get("delete") == "delete-daemon-down":  # the daemon is down for the purge too
        assert "could not be purged" in message and f"`multipass delete --purge {INSTANCE}`" in message
    elif scenario.get("delete") == "delete-missing":
        assert f"if `multipass list` later shows {INSTANCE}, remove it with `multipass delete --purge {INSTANCE}`" in message
    else:
        assert "The half-made instance was purged." in message
        assert fake_multipass.instances() == {}


def test_contract_a_daemon_that_does_not_answer_stops_create_before_the_launch(fake_multipass, cloud_config):
    fake_multipass.configure(info="info-daemon-down", launch="launch-daemon-down")

    with pytest.raises(MultipassError, match=rf"agent agent-3 \(Multipass instance {INSTANCE}\): info failed\. "
                                             r".*`sudo snap start multipass`"):
        driver().create(INSTANCE, fields(), cloud_config)
    assert fake_multipass.commands() == [["info", INSTANCE]]


def test_contract_launch_onto_an_existing_instance_leaves_it_alone_and_says_how_to_remove_it(
    fake_multipass, cloud_config
):
    fake_multipass.holds(**{INSTANCE: "Stopped"})

    with pytest.raises(MultipassError, match=rf"agent agent-3 .*remove it with `multipass delete --purge {INSTANCE}`"):
        driver().create(INSTANCE, fields(), cloud_config)

    assert fake_multipass.commands() == [["info", INSTANCE], ["launch", "--name"]]
    assert fake_multipass.instances() == {INSTANCE: "Stopped"}


def test_contract_instance_gone_after_launch_is_reported_and_purged(fake_multipass, cloud_config):
    fake_multipass.configure(info="info-missing")

    with pytest.raises(MultipassError) as failure:
        driver().create(INSTANCE, fields(), cloud_config)

    assert "agent agent-3" in str(failure.value) and "`multipass list`" in str(failure.value)
    assert fake_multipass.commands() == [["info", INSTANCE], ["launch", "--name"], ["info", INSTANCE],
                                         ["delete", "--purge"]]


def test_contract_vm_whose_sshd_never_offers_the_pinned_key_is_purged(
    fake_multipass, local_sshd, make_key, cloud_config
):
    with pytest.raises(MultipassError) as failure:
        driver(local_sshd.ports["agent-1"], ready_timeout_s=1).create(
            INSTANCE, fields(make_key("not-the-host").public), cloud_config)

    message = str(failure.value)
    assert "agent agent-3" in message and "did not offer the pinned host key within 1s" in message
    assert "(last: a different key)" in message
    assert "The half-made instance was purged." in message
    assert fake_multipass.instances() == {}


def test_contract_missing_multipass_is_named_before_anything_runs(fake_multipass, cloud_config, tmp_path,
                                                                  monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    with pytest.raises(MultipassError, match=r"agent agent-3 .*multipass is not installed here: install it "
                                             r"\(`sudo snap install multipass`\)\. Nothing was launched"):
        driver().create(INSTANCE, fields(), cloud_config)
    assert fake_multipass.calls() == []


def test_contract_delete_purges_and_a_missing_instance_is_not_an_error(fake_multipass):
    fake_multipass.holds(**{INSTANCE: "Running"})

    driver().delete(INSTANCE, fields())
    assert fake_multipass.calls()[-1]["argv"] == ["delete", "--purge", INSTANCE]
    assert fake_multipass.instances() == {}

    driver().delete(INSTANCE, fields())  # already gone: still a success
    assert fake_multipass.commands() == [["delete", "--purge"], ["delete", "--purge"]]


def test_contract_delete_with_the_daemon_down_fails_and_says_what_to_do(fake_multipass):
    fake_multipass.configure(delete="delete-daemon-down")

    with pytest.raises(MultipassError) as failure:
        driver().delete(INSTANCE, fields())

    message = str(failure.value)
    assert f"agent agent-3 (Multipass instance {INSTANCE}): delete failed." in message
    assert "`sudo snap start multipass`" in message


def test_contract_missing_tools_names_multipass_and_the_daemon(fake_multipass, monkeypatch, tmp_path):
    assert multipass.BACKEND.missing_tools() == []
    fake_multipass.configure(version="version-daemon-down")
    assert multipass.BACKEND.missing_tools() == [
        "a running Multipass daemon (`multipass version` lists no multipassd: "
        "start it with `sudo snap start multipass`)"
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", f"{empty}:/usr/bin:/bin")
    assert "multipass (install it: `sudo snap install multipass`)" in multipass.BACKEND.missing_tools()


# --- refresh and up: the resource's provider on the driver --------------------------------------


def state_after_up(host: str = FIXTURE_IP) -> dict:
    """The VM's outputs in the stack's state after `pulumi up`, as agentfleet's provider wrote them."""
    return {**fields(), "host": host, "port": 22, "secret": digest("#cloud-config\n")}


def test_refresh_of_a_vm_with_a_changed_address_updates_the_host_and_changes_no_input(fake_multipass):
    fake_multipass.holds(**{INSTANCE: "Running"})
    fake_multipass.configure(running_info="info-new-address")

    read = Reconciler(driver_of("MultipassVm")).read(INSTANCE, state_after_up())

    assert read.id == INSTANCE
    assert read.outs == {**state_after_up(), "host": NEW_IP}
    # Nothing declared drifted: `pulumi up` has nothing to change, the endpoint follows the VM.
    assert read.inputs is None
    assert fake_multipass.calls()[-1]["argv"] == ["info", INSTANCE, "--format", "json"]


@pytest.mark.parametrize("instances", [{}, {INSTANCE: "Deleted"}], ids=["purged", "deleted-without-purge"])
def test_refresh_of_a_missing_or_deleted_instance_reads_as_gone(fake_multipass, instances):
    fake_multipass.holds(**instances)

    read = Reconciler(driver_of("MultipassVm")).read(INSTANCE, state_after_up())

    assert read.id is None  # Pulumi drops the VM from the state; `pulumi up` creates it again
    assert fake_multipass.instances() == instances  # reading changes nothing


def test_refresh_of_a_daemon_that_does_not_answer_fails_naming_the_agent(fake_multipass):
    fake_multipass.configure(info="info-daemon-down")

    with pytest.raises(MultipassError, match=rf"agent agent-3 \(Multipass instance {INSTANCE}\): info failed\. "
                                             r"The Multipass daemon is not running"):
        Reconciler(driver_of("MultipassVm")).read(INSTANCE, state_after_up())


def test_a_stopped_vm_reads_as_stopped_and_up_starts_it_and_waits_for_its_pinned_key(
    fake_multipass, local_sshd
):
    fake_multipass.holds(**{INSTANCE: "Stopped"})
    provider = Reconciler(driver_of("MultipassVm"))
    declared = {**fields(local_sshd.host_key.public), "secret": "#cloud-config\n"}
    after_up = {**state_after_up(), "host_public_key": local_sshd.host_key.public}

    read = provider.read(INSTANCE, after_up)
    assert read.outs["state"] == "stopped" and read.outs["host"] == FIXTURE_IP  # no address while stopped
    assert read.inputs["state"] == "stopped" and "secret" not in read.inputs
    # The next `pulumi up`: the state differs from the declaration, and it is changed in place.
    planned = provider.diff(read.outs, declared)
    assert planned.changes and planned.replaces == []

    port = local_sshd.ports["agent-1"]
    started = driver(port).update(INSTANCE, fields(local_sshd.host_key.public), "#cloud-config\n")

    assert started == {"host": "127.0.0.1", "port": port, "state": "running"}
    assert fake_multipass.commands()[-4:-1] == [["info", INSTANCE], ["start", INSTANCE], ["info", INSTANCE]]
    # Then the declared cloud-config is applied in place (a no-op in the VM when it is unchanged).
    assert fake_multipass.commands()[-1] == ["exec", INSTANCE]
    assert not any(call["argv"][0] == "launch" for call in fake_multipass.calls())  # started, not rebuilt
    assert fake_multipass.instances() == {INSTANCE: "Running"}


def test_a_started_vm_that_never_offers_its_pinned_key_is_an_error_and_is_kept(fake_multipass, local_sshd, make_key):
    fake_multipass.holds(**{INSTANCE: "Stopped"})

    with pytest.raises(MultipassError, match=rf"agent agent-3 \(Multipass instance {INSTANCE}\): started, but "
                                             r"sshd on 127\.0\.0\.1:\d+ did not offer the pinned host key within 1s"):
        driver(local_sshd.ports["agent-1"], ready_timeout_s=1).update(
            INSTANCE, fields(make_key("not-the-host").public), "#cloud-config\n")
    assert fake_multipass.instances() == {INSTANCE: "Running"}  # its disk holds the workspace


def test_up_after_a_delete_without_purge_purges_it_and_launches_anew(fake_multipass, local_sshd, cloud_config):
    fake_multipass.holds(**{INSTANCE: "Deleted"})
    port = local_sshd.ports["agent-1"]

    made = driver(port).update(INSTANCE, fields(local_sshd.host_key.public), cloud_config)

    assert made == {"host": "127.0.0.1", "port": port, "state": "running"}
    # Multipass keeps a deleted instance's name taken: it is purged first, then launched.
    assert fake_multipass.commands() == [["info", INSTANCE], ["info", INSTANCE], ["delete", "--purge"],
                                         ["launch", "--name"], ["info", INSTANCE]]
    assert fake_multipass.instances() == {INSTANCE: "Running"}
