"""`agentfleet deploy-keys`, `clone` and doctor's workspace check against the throwaway sshd.

The agents' first-boot script is the real images/agent-files/first-clone, reached where the test agent
can run it (FIRST_CLONE points there); git, sshd and the remote over SSH are real.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from agentfleet import commands
from agentfleet.cli import main
from tests.conftest import AGENTS

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out, err, {})
    return status, out.getvalue(), err.getvalue()


def outputs_with(tmp_path: Path, local_sshd, **changes: dict) -> str:
    raw = copy.deepcopy(local_sshd.outputs())
    for agent, fields in changes.items():
        raw["agents"][agent.replace("_", "-")].update(fields)
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(raw))
    return str(path)


def test_deploy_keys_lists_each_generated_key_with_its_remote(outputs_file, local_sshd):
    status, out, err = run_cli("--outputs", str(outputs_file), "deploy-keys")
    assert (status, err) == (0, "")
    for agent in AGENTS:
        remote = local_sshd.agent_outputs(agent)["remote"]
        assert (
            f"{agent}: {remote}\n  title: agentfleet outputs/{agent}\n  key:   {local_sshd.keys[agent].public}\n"
            in out
        )
    assert out.startswith("# Add each key as a deploy key of its remote, with write access")


def test_deploy_keys_json_is_what_a_forge_api_takes(tmp_path, local_sshd):
    outputs = outputs_with(tmp_path, local_sshd, agent_2={"remote_public_key": None})  # its own key
    status, out, err = run_cli("--outputs", outputs, "deploy-keys", "--json")
    assert (status, err) == (0, "")
    assert json.loads(out) == [
        {
            "agent": "agent-1",
            "remote": local_sshd.agent_outputs("agent-1")["remote"],
            "title": "agentfleet outputs/agent-1",
            "key": local_sshd.keys["agent-1"].public,
            "read_only": False,
        }
    ]


def test_deploy_keys_says_when_there_is_nothing_to_register(tmp_path, local_sshd):
    outputs = outputs_with(tmp_path, local_sshd, agent_1={"remote": None}, agent_2={"remote_public_key": None})
    status, out, err = run_cli("--outputs", outputs, "deploy-keys", "--json")
    assert (status, json.loads(out)) == (0, [])
    assert err.startswith("no agent of outputs file ") and "has a generated remote key" in err


@pytest.fixture
def first_boot(tmp_path, local_sshd, monkeypatch):
    """agent-2 as first boot leaves it: its git config names remote, branch and an empty
    workspace, and the first-boot script is installed where `clone` runs it."""
    script = tmp_path / "first-clone"
    shutil.copy(PROJECT_ROOT / "images" / "agent-files" / "first-clone", script)
    script.chmod(0o755)
    monkeypatch.setattr(commands, "FIRST_CLONE", str(script))
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    gitconfig = local_sshd.homes["agent-2"] / ".gitconfig"

    def configure(remote: str) -> str:
        for key, value in (("remote", remote), ("branch", "agent/agent-2"), ("workspace", str(workspace))):
            subprocess.run(["git", "config", "--file", str(gitconfig), f"agentfleet.{key}", value], check=True)
        return outputs_with(tmp_path, local_sshd, agent_2={"workspace": str(workspace), "remote": remote})

    yield configure, workspace
    subprocess.run(["git", "config", "--file", str(gitconfig), "--remove-section", "agentfleet"], check=True)


def test_clone_fills_an_empty_workspace_once(first_boot, local_sshd):
    configure, workspace = first_boot
    remote = local_sshd.agent_outputs("agent-2")["remote"]
    outputs = configure(remote)
    status, out, err = run_cli("--outputs", outputs, "clone", "agent-2")
    assert (status, err) == (0, "")
    assert out == f"agent-2: cloned: {remote} into {workspace} (branch agent/agent-2)\n"
    git = ["git", "-C", str(workspace)]
    branch = subprocess.run([*git, "branch", "--show-current"], capture_output=True, text=True, check=True)
    subject = subprocess.run([*git, "log", "-1", "--format=%s"], capture_output=True, text=True, check=True)
    assert (branch.stdout, subject.stdout) == ("agent/agent-2\n", "seed\n")
    status, out, _ = run_cli("--outputs", outputs, "clone")
    assert status == 0
    assert out.splitlines() == [
        f"agent-1: present: {local_sshd.homes['agent-1'] / 'workspace'} holds a repository already",
        f"agent-2: present: {workspace} holds a repository already",
    ]


def test_doctor_fails_an_empty_workspace_and_clone_says_why_it_failed(first_boot, local_sshd):
    configure, workspace = first_boot
    port = local_sshd.ports["agent-2"]
    unregistered = f"ssh://nobody@127.0.0.1:{port}/srv/app.git"  # the server refuses this user's key
    outputs = configure(unregistered)
    status, out, _ = run_cli("--outputs", outputs, "doctor", "agent-2")
    assert status == 1
    assert f"  FAIL  workspace     no clone of {unregistered} in {workspace}\n" in out
    hint = "hint: register its deploy key on the remote (agentfleet deploy-keys), then: agentfleet clone agent-2"
    assert hint in out
    status, out, err = run_cli("--outputs", outputs, "clone", "agent-2")
    assert (status, err) == (1, "")
    first, second = out.splitlines()
    assert first.startswith("agent-2: failed: ") and "could not clone" in first
    assert second == f"  {hint}"
    assert list(workspace.iterdir()) == []
