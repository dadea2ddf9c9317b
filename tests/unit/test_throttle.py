"""Gentle on the forge: the per-host gate, which commands touch the forge, `forge_connections` in
the spec and the outputs, the client's gated commands, and first-clone's side of the boot gate
(the real script and real git against a file:// remote)."""

from __future__ import annotations

import copy
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agentfleet import Fleet, OutputsInvalid
from agentfleet.contract import CLONE_GATE
from agentfleet.throttle import DEFAULT_FORGE_CONNECTIONS, ForgeGate, touches_forge
from tests.unit.git_repos import ENV, git, remote_with_main
from tests.unit.spec_helpers import agent, load, problems
from tests.unit.test_client_outputs import outputs  # noqa: F401 - the fixture, in the contract's shape

SCRIPT = Path(__file__).resolve().parents[2] / "images" / "agent-files" / "first-clone"
REMOTE = "https://git.example.com/acme/app.git"


def most_at_once(gate: ForgeGate, hosts: list[str | None]) -> dict[str | None, int]:
    """Run one short task per host on its own thread through the gate; the most of each host's
    tasks that ran at one time."""
    lock, now, most = threading.Lock(), {}, {}

    def task(host: str | None) -> None:
        with gate.held(host):
            with lock:
                now[host] = now.get(host, 0) + 1
                most[host] = max(most.get(host, 0), now[host])
            time.sleep(0.02)
            with lock:
                now[host] -= 1

    threads = [threading.Thread(target=task, args=(host,)) for host in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return most


def test_a_gate_keeps_each_host_within_its_connections():
    most = most_at_once(ForgeGate(2), ["github.com"] * 12 + ["gitlab.com"] * 12)
    assert most == {"github.com": 2, "gitlab.com": 2}


def test_no_remote_holds_no_slot():
    assert most_at_once(ForgeGate(1), [None] * 8)[None] > 1


def test_a_gate_needs_a_slot():
    with pytest.raises(ValueError, match="at least 1"):
        ForgeGate(0)


@pytest.mark.parametrize("backend", ["docker", "lima", "multipass"])
def test_every_machine_with_a_remote_carries_the_gate_of_its_host(backend):
    from components.backends import MachineContext
    from components.backends.docker.backend import container_fields
    from components.backends.lima.backend import VmImage, vm_fields as lima_fields
    from components.backends.multipass.backend import vm_fields as multipass_fields

    fleet = load({"forge_connections": 3, "agents": [agent("a-1", backend=backend, remote=REMOTE),
                                                     agent("a-2", backend=backend)]})
    context = MachineContext(fleet.stack, fleet=fleet)
    make = {"docker": container_fields, "multipass": multipass_fields,
            "lima": lambda c, a: lima_fields(c, a, VmImage("/disk", "/vmlinuz", "/initrd", "ro"))}[backend]
    with_remote, without = (make(context, a) for a in fleet.agents)
    assert with_remote["forge_gate"] == {"host": "git.example.com", "connections": 3}
    assert "forge_gate" not in without


@pytest.mark.parametrize(("command", "touches"), [
    (["git", "fetch"], True),
    (["git", "-C", "/w", "-c", "a.b=c", "pull", "--rebase"], True),
    (["/usr/bin/git", "push", "origin", "HEAD"], True),
    (["git", "ls-remote", "origin"], True),
    (["git", "status"], False),
    (["git", "-C", "fetch", "log"], False),  # -C takes a value: the subcommand is log
    (["make", "fetch"], False),
    ([], False),
    ("git fetch -q", True),
    ("cd sub && git -C x pull", True),
    ("git log --grep fetch; echo done", False),
    ("echo git; fetch", False),
    ("legit push", False),
])
def test_touches_forge(command, touches):
    assert touches_forge(command) is touches


def test_forge_connections_default_and_given():
    assert load({"agents": [agent(remote=REMOTE)]}).forge_connections == DEFAULT_FORGE_CONNECTIONS
    assert load({"forge_connections": 3, "agents": [agent(remote=REMOTE)]}).forge_connections == 3


@pytest.mark.parametrize("value", [0, -2, True, "4", 2.5, None])
def test_a_bad_forge_connections_names_stack_and_field(value):
    (problem,) = problems({"forge_connections": value, "agents": [agent(remote=REMOTE)]})
    assert problem.startswith('stack "test", field "forge_connections": ')
    assert "use an integer of at least 1" in problem


def test_outputs_carry_the_gate(outputs):  # noqa: F811 - the imported fixture
    raw = copy.deepcopy(outputs)
    raw["agents"]["agent-1"]["forge_gate"] = {"host": "127.0.0.1", "connections": 3}
    raw["agents"]["agent-2"]["forge_gate"] = None
    fleet = Fleet.from_outputs(raw, "dev")
    one, two = fleet.endpoint("agent-1"), fleet.endpoint("agent-2")
    assert (one.forge_host, one.forge_connections) == ("127.0.0.1", 3)
    assert (two.forge_host, two.forge_connections) == (None, None)


def test_a_bad_gate_in_the_outputs_is_named(outputs):  # noqa: F811
    raw = copy.deepcopy(outputs)
    raw["agents"]["agent-1"]["forge_gate"] = {"host": "127.0.0.1", "connections": 0}
    with pytest.raises(OutputsInvalid, match=r"agents\.agent-1\.forge_gate\.connections must be a number of connections"):
        Fleet.from_outputs(raw, "dev")


def test_the_fleet_holds_its_agents_to_the_limit(outputs):  # noqa: F811
    raw = copy.deepcopy(outputs)
    for number in range(3, 9):  # six more agents on the same remote host
        raw["agents"][f"agent-{number}"] = {**raw["agents"]["agent-1"], "port": 22000 + number}
        raw["agents"][f"agent-{number}"]["known_hosts"] = raw["agents"]["agent-1"]["known_hosts"].replace(
            "22001", str(22000 + number))
        raw["agent_private_keys"][f"agent-{number}"] = raw["agent_private_keys"]["agent-1"]
    for name in raw["agents"]:
        raw["agents"][name]["forge_gate"] = {"host": "127.0.0.1", "connections": 2}
    fleet = Fleet.from_outputs(raw, "dev")
    lock, held, most = threading.Lock(), [0], [0]

    def fetch() -> None:
        with lock:
            held[0] += 1
            most[0] = max(most[0], held[0])
        time.sleep(0.02)
        with lock:
            held[0] -= 1

    threads = [threading.Thread(target=fleet.throttled, args=(name, fetch)) for name in fleet.names
               if name != "agent-2"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 2


def test_outputs_from_before_the_gate_have_no_limit(outputs):  # noqa: F811
    fleet = Fleet.from_outputs(outputs, "dev")
    assert fleet.throttled("agent-1", lambda: "ran") == "ran"
    assert fleet.endpoint("agent-1").forge_connections is None


# first-clone's side of the boot gate: the real script, its gate moved to a temporary directory.

def test_the_script_and_the_driver_agree_on_the_gate():
    assert f"gate={CLONE_GATE}\n" in SCRIPT.read_text()


def gated_script(tmp_path: Path) -> tuple[Path, Path]:
    gate = tmp_path / "gate"
    gate.mkdir()
    script = tmp_path / "first-clone"
    script.write_text(SCRIPT.read_text().replace(f"gate={CLONE_GATE}\n", f"gate={gate}\n"))
    return script, gate


def start_first_clone(tmp_path: Path, script: Path) -> tuple[subprocess.Popen, Path]:
    home = tmp_path / "home"
    home.mkdir()
    remote = remote_with_main(tmp_path, {"notes": "0\n"})
    for key, value in {"remote": f"file://{remote}", "branch": "agent/a", "workspace": str(home / "workspace")}.items():
        git(tmp_path, "config", "--file", str(home / ".gitconfig"), f"agentfleet.{key}", value)
    process = subprocess.Popen(["sh", str(script)], env={**ENV, "HOME": str(home)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, home / "workspace"


def wait_for(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.02)


def test_a_gated_first_clone_waits_for_its_turn_and_says_when_it_ends(tmp_path):
    script, gate = gated_script(tmp_path)
    (gate / "required").touch()
    process, workspace = start_first_clone(tmp_path, script)
    wait_for(gate / "waiting")
    time.sleep(0.3)
    assert process.poll() is None and not workspace.exists(), "it cloned before it was admitted"
    (gate / "admitted").touch()
    assert process.wait(timeout=30) == 0, process.stderr.read()
    assert (gate / "done").exists() and not (gate / "required").exists()
    assert git(workspace, "rev-parse", "--abbrev-ref", "HEAD") == "agent/a"


def test_an_ungated_first_clone_does_not_wait(tmp_path):
    script, gate = gated_script(tmp_path)
    process, workspace = start_first_clone(tmp_path, script)
    assert process.wait(timeout=30) == 0, process.stderr.read()
    assert (workspace / ".git").is_dir()
    assert not (gate / "waiting").exists() and not (gate / "done").exists()
