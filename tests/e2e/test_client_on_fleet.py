"""The agentfleet client and CLI against real agents from a real `pulumi up`: exec with exit
codes, parallel exec, the generated ssh_config used by real OpenSSH and git, a changed host key."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from agentfleet import Fleet, HostKeyMismatch
from agentfleet.cli import main as cli
from tests.e2e.support import FleetStack

AGENTS = ("agent-a", "agent-b")


@pytest.fixture(scope="module")
def outputs_file(make_stack, tmp_path_factory) -> Path:
    stack: FleetStack = make_stack("client")
    stack.set_fleet({"agents": [
        {"name": name, "identity": {"name": name.title(), "email": f"{name}@fleet.test"}} for name in AGENTS
    ]})
    outputs = stack.up()
    path = tmp_path_factory.mktemp("client") / "outputs.json"
    path.write_text(json.dumps(outputs))
    with Fleet.from_outputs(outputs, stack.name) as fleet:
        fleet.agent("agent-a").run("touch marker", timeout=30)
    return path


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = cli(list(argv), stdout=out, stderr=err, environ={})
    return status, out.getvalue(), err.getvalue()


def test_exec_prints_the_agents_email_and_passes_exit_status_through(outputs_file):
    # With no remote, the workspace starts as a repository whose first commit is the agent's.
    status, out, _ = run_cli("--outputs", str(outputs_file), "exec", "agent-a", "--", "git", "log", "-1", "--format=%ae")
    assert (status, out.strip()) == (0, "agent-a@fleet.test")
    status, _, _ = run_cli("--outputs", str(outputs_file), "exec", "agent-a", "--", "sh -c 'exit 7'")
    assert status == 7


def test_exec_all_prefixes_each_agent_and_fails_if_one_fails(outputs_file):
    status, out, err = run_cli("--outputs", str(outputs_file), "exec", "--all", "--parallel", "2", "--",
                               "git", "config", "user.email")
    assert status == 0
    assert sorted(out.strip().splitlines()) == ["agent-a | agent-a@fleet.test", "agent-b | agent-b@fleet.test"]
    assert "2 ok, 0 failed" in out + err
    status, _, summary = run_cli("--outputs", str(outputs_file), "exec", "--all", "--", "test", "-e", "marker")
    assert status == 1 and "1 ok, 1 failed" in summary


def test_ssh_config_works_with_real_openssh_and_git(outputs_file, tmp_path):
    status, _, _ = run_cli("--outputs", str(outputs_file), "ssh-config", "--output", str(tmp_path / "ssh"))
    assert status == 0
    config = tmp_path / "ssh" / "ssh_config"
    email = subprocess.run(["ssh", "-F", str(config), "agent-b", "git config user.email"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert email == "agent-b@fleet.test"
    clone = subprocess.run(["git", "clone", "-q", "agent-a:/home/agent/workspace", str(tmp_path / "clone")],
                           env={"GIT_SSH_COMMAND": f"ssh -F {config}", "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True)
    assert clone.returncode == 0, clone.stderr
    log = subprocess.run(["git", "-C", str(tmp_path / "clone"), "log", "-1", "--format=%ae"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert log == "agent-a@fleet.test"


def test_a_changed_host_key_is_refused(outputs_file, tmp_path):
    outputs = json.loads(outputs_file.read_text())
    agent = outputs["agents"]["agent-a"]
    # Pin agent-b's key for agent-a's endpoint: the server is real, the key is not the one it has.
    other_key = outputs["agents"]["agent-b"]["known_hosts"].split(" ", 1)[1]
    agent["known_hosts"] = f"[{agent['host']}]:{agent['port']} {other_key}"
    with Fleet.from_outputs(outputs, "tampered") as fleet, pytest.raises(HostKeyMismatch) as refused:
        fleet.agent("agent-a").run("true", timeout=20)
    assert "agent-a" in str(refused.value)
    tampered = tmp_path / "outputs.json"
    tampered.write_text(json.dumps(outputs))
    status, _, err = run_cli("--outputs", str(tampered), "exec", "agent-a", "--", "true")
    assert status == 255 and "Traceback" not in err and "agent-a" in err
