"""Multipass backend: contract-tested, not booted.

Multipass ships only as a snap and cannot be installed on these machines. So these tests hold
the backend to Multipass' CLI contract as its source defines it (tests/unit/fixtures/multipass/,
written in that format, see its README):

- the pure functions (commands, `multipass info --format json` parsing, error explanations)
  against the written outputs;
- the real create and delete commands, run by LocalCommand's own code path
  (`components.command.run_command`), against a FAKE `multipass` executable first on PATH that
  records its argv and stdin and replays those outputs. The readiness wait is real: the fake's
  `info` reports 127.0.0.1, where the throwaway sshd of tests/conftest.py offers the pinned key.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pulumi
import pytest

from components.backends import MachineContext, parse_endpoint
from components.backends import multipass
from components.backends.multipass_cli import (
    MultipassError,
    daemon_answers,
    explain_error,
    instance_name_problem,
    launch_argv,
    offers_key,
    parse_info,
    wait_for_host_key,
)
from components.cloudinit import AgentKeys, render_cloud_config
from components.command import CommandFailed, run_command
from components.keys import generate_ed25519
from components.spec import load_fleet

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "multipass"
FIXTURE_INSTANCE = "agentfleet-mixed-agent-3"
FIXTURE_IP = "10.108.7.23"

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


def test_contract_info_json_of_a_running_instance_gives_its_first_ipv4_on_port_22():
    assert parse_info(fixture("info-running")["stdout"], FIXTURE_INSTANCE) == {
        "host": FIXTURE_IP, "port": 22,
    }


@pytest.mark.parametrize("text, name, expected", [
    (fixture("info-deleted")["stdout"], FIXTURE_INSTANCE, "is Deleted, not Running"),
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
        multipass.provision(AGENT, MachineContext("my_stack"), None, None, None)


def test_readiness_wait_accepts_only_the_pinned_key_and_says_what_it_saw():
    pinned = "ssh-ed25519 AAAApinned agent@host"
    assert offers_key("10.0.0.1 ssh-ed25519 AAAApinned\n", pinned)
    assert not offers_key("10.0.0.1 ssh-ed25519 AAAAother\n", pinned)
    answers = iter(["", "10.0.0.1 ssh-ed25519 AAAApinned\n"])
    wait_for_host_key("10.0.0.1", 22, pinned, 5, probe=lambda *_: next(answers), poll_s=0)
    with pytest.raises(MultipassError, match=r"did not offer the pinned host key within 0s \(last: offered ssh-rsa"):
        wait_for_host_key("10.0.0.1", 22, pinned, 0, probe=lambda *_: "10.0.0.1 ssh-rsa AAAAx\n")


# --- the real commands against a FAKE multipass -------------------------------------------------

FAKE_MULTIPASS = '''#!{python}
"""FAKE multipass for agentfleet's contract tests: records argv and stdin, replays written outputs."""
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
instances = set(json.loads(state.read_text())) if state.exists() else set()


def answer(case, name):
    state.write_text(json.dumps(sorted(instances)))
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
    case = scenario["launch"]
    if case in ("launch-ok", "launch-timeout", "launch-init-timeout", "launch-exists"):
        instances.add(name)  # a launch that timed out leaves its instance behind
    answer(case, name)
if command == "info":
    name = args[1]
    answer(scenario.get("info") or ("info-running" if name in instances else "info-missing"), name)
if command == "delete" and args[1] == "--purge":
    name = args[2]
    if scenario.get("delete"):
        answer(scenario["delete"], name)
    if name in instances:
        instances.discard(name)
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
        merged = {"version": "version-daemon-up", "launch": "launch-ok", "ip": "127.0.0.1", **scenario}
        (self.directory / "scenario.json").write_text(json.dumps(merged))

    def calls(self) -> list[dict]:
        log = self.directory / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def commands(self) -> list[list[str]]:
        return [call["argv"][:2] for call in self.calls()]

    def instances(self) -> list[str]:
        state = self.directory / "instances.json"
        return json.loads(state.read_text()) if state.exists() else []


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
    # Pulumi runs providers (so LocalCommand) in the project directory.
    monkeypatch.chdir(ROOT)
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
    assert "PRIVATE KEY" in text
    return text


def commands(host_public_key: str, port: int = 22, ready_timeout_s: int = 10) -> tuple[list[str], list[str]]:
    return multipass.machine_commands(CONTEXT, AGENT, host_public_key, ssh_port=port, ready_timeout_s=ready_timeout_s)


def test_contract_create_launches_with_the_spec_and_cloud_config_on_stdin_then_waits_for_the_pinned_key(
    fake_multipass, local_sshd, cloud_config
):
    port = local_sshd.ports["agent-1"]
    create, _ = commands(local_sshd.host_key.public, port)

    stdout = run_command("creating agent-3-vm", create, cloud_config)

    assert parse_endpoint(stdout) == {"host": "127.0.0.1", "port": port}
    assert fake_multipass.commands() == [["launch", "--name"], ["info", INSTANCE]]
    launch, info = fake_multipass.calls()
    assert launch["stdin"] == cloud_config and info["stdin"] == ""
    assert launch["argv"] == [
        "launch", "--name", INSTANCE, "--cpus", "2", "--memory", "768M", "--disk", "12G",
        "--timeout", "900", "--cloud-init", "-", "24.04",
    ]
    assert info["argv"] == ["info", INSTANCE, "--format", "json"]
    # The secret is in no command line: not LocalCommand's, not any multipass call's.
    for argv in [create, *(call["argv"] for call in fake_multipass.calls())]:
        assert not any("PRIVATE KEY" in arg or "#cloud-config" in arg for arg in argv)
    assert fake_multipass.instances() == [INSTANCE]


@pytest.mark.parametrize("scenario, multipass_said, advice", [
    ({"launch": "launch-timeout"}, "Timed out waiting for instance launch.", "run `pulumi up` again"),
    ({"launch": "launch-init-timeout"}, "timed out waiting for initialization to complete", "run `pulumi up` again"),
    ({"launch": "launch-daemon-down", "delete": "delete-daemon-down"},
     "cannot connect to the multipass socket", "`sudo snap start multipass`"),
    # The client's timer fired while the daemon was still preparing: nothing to purge yet.
    ({"launch": "launch-timeout", "delete": "delete-missing"},
     "Timed out waiting for instance launch.", "run `pulumi up` again"),
])
def test_contract_failed_launch_purges_the_vm_and_names_the_agent(
    fake_multipass, cloud_config, scenario, multipass_said, advice
):
    fake_multipass.configure(**scenario)
    create, _ = commands("ssh-ed25519 AAAAunused")

    with pytest.raises(CommandFailed) as failure:
        run_command("creating agent-3-vm", create, cloud_config)

    message = str(failure.value)
    assert f"agent agent-3 (Multipass instance {INSTANCE}): launch failed." in message
    assert multipass_said in message and advice in message
    assert fake_multipass.commands()[-1] == ["delete", "--purge"]
    assert fake_multipass.calls()[-1]["argv"] == ["delete", "--purge", INSTANCE]
    if scenario.get("delete") == "delete-daemon-down":  # the daemon is down for the purge too
        assert "could not be purged" in message and f"`multipass delete --purge {INSTANCE}`" in message
    elif scenario.get("delete") == "delete-missing":
        assert f"if `multipass list` later shows {INSTANCE}, remove it with `multipass delete --purge {INSTANCE}`" in message
    else:
        assert "The half-made instance was purged." in message
        assert fake_multipass.instances() == []


def test_contract_launch_onto_an_existing_instance_leaves_it_alone_and_says_how_to_remove_it(
    fake_multipass, cloud_config
):
    fake_multipass.configure(launch="launch-exists")
    create, _ = commands("ssh-ed25519 AAAAunused")

    with pytest.raises(CommandFailed, match=rf"remove it with `multipass delete --purge {INSTANCE}`"):
        run_command("creating agent-3-vm", create, cloud_config)

    assert fake_multipass.commands() == [["launch", "--name"]]
    assert fake_multipass.instances() == [INSTANCE]


def test_contract_instance_gone_after_launch_is_reported_and_purged(fake_multipass, cloud_config):
    fake_multipass.configure(info="info-missing")
    create, _ = commands("ssh-ed25519 AAAAunused")

    with pytest.raises(CommandFailed) as failure:
        run_command("creating agent-3-vm", create, cloud_config)

    assert "agent agent-3" in str(failure.value) and "`multipass list`" in str(failure.value)
    assert fake_multipass.commands() == [["launch", "--name"], ["info", INSTANCE], ["delete", "--purge"]]


def test_contract_vm_whose_sshd_never_offers_the_pinned_key_is_purged(
    fake_multipass, local_sshd, make_key, cloud_config
):
    create, _ = commands(make_key("not-the-host").public, local_sshd.ports["agent-1"], ready_timeout_s=1)

    with pytest.raises(CommandFailed) as failure:
        run_command("creating agent-3-vm", create, cloud_config)

    message = str(failure.value)
    assert "agent agent-3" in message and "did not offer the pinned host key within 1s" in message
    assert "offered ssh-ed25519 but not the pinned key" in message
    assert "The half-made instance was purged." in message
    assert fake_multipass.instances() == []


def test_contract_delete_purges_and_a_missing_instance_is_not_an_error(fake_multipass, cloud_config):
    create, delete = commands("ssh-ed25519 AAAAunused")
    assert delete[:2] == ["python3", "-c"] and delete[-3:] == ["delete", "agent-3", INSTANCE]
    fake_multipass.configure(info="info-missing")  # make a launch fail half-way: the instance exists
    (fake_multipass.directory / "instances.json").write_text(json.dumps([INSTANCE]))

    run_command("deleting agent-3-vm", delete, None)
    assert fake_multipass.calls()[-1]["argv"] == ["delete", "--purge", INSTANCE]
    assert fake_multipass.instances() == []

    run_command("deleting agent-3-vm", delete, None)  # already gone: still a success
    assert fake_multipass.calls()[-1]["argv"] == ["delete", "--purge", INSTANCE]


def test_contract_delete_with_the_daemon_down_fails_and_says_what_to_do(fake_multipass):
    fake_multipass.configure(delete="delete-daemon-down")
    _, delete = commands("ssh-ed25519 AAAAunused")

    with pytest.raises(CommandFailed) as failure:
        run_command("deleting agent-3-vm", delete, None)

    message = str(failure.value)
    assert f"agent agent-3 (Multipass instance {INSTANCE}): delete failed." in message
    assert "`sudo snap start multipass`" in message


def test_contract_create_refers_to_the_program_so_editing_it_replaces_no_vm():
    create, delete = commands("ssh-ed25519 AAAAkey")
    assert create[:3] == ["python3", multipass.PROGRAM_PATH, "create"]
    assert (ROOT / multipass.PROGRAM_PATH).resolve() == multipass.PROGRAM
    # The delete carries the program's text: `pulumi destroy` needs nothing but the state.
    assert delete[2] == multipass.PROGRAM.read_text()


def test_contract_missing_tools_names_multipass_and_the_daemon(fake_multipass, monkeypatch, tmp_path):
    assert multipass.missing_tools() == []
    fake_multipass.configure(version="version-daemon-down")
    assert multipass.missing_tools() == [
        "a running Multipass daemon (`multipass version` lists no multipassd: "
        "start it with `sudo snap start multipass`)"
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", f"{empty}:/usr/bin:/bin")
    assert "multipass (install it: `sudo snap install multipass`)" in multipass.missing_tools()
