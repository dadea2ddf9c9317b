"""The audit trail on a real fleet: a push made through `agentfleet exec` and one made by a plain
`ssh` login to the same agent both show up in `agentfleet audit NAME --json` (git's own trace2
in the agent), with the right agent and times; only the exec one is in the operator's log."""

from __future__ import annotations

import io
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentfleet.cli import main as cli
from components.keys import generate_ed25519
from tests.e2e.support import FleetStack, GitServer

AGENT = "audited"
OTHER = "bystander"
EXEC_PUSH = "git push -q origin HEAD:refs/heads/via-exec"
SSH_PUSH = "git push -q origin HEAD:refs/heads/via-ssh"


@pytest.fixture(scope="module")
def files(git_server: GitServer, make_stack, tmp_path_factory) -> tuple[Path, Path]:
    """The fleet's outputs file and the operator log the tests run the CLI with."""
    stack: FleetStack = make_stack("audit")
    private, public = generate_ed25519("audit-deploy-key")
    git_server.authorize(public)
    stack.set_secret("deployKey", private)
    stack.set_fleet({"attach_networks": [git_server.network], "agents": [
        {"name": AGENT, "identity": {"name": "Audited", "email": "audited@fleet.test"},
         "remote": git_server.url, "known_hosts": [git_server.known_hosts_line],
         "credential": {"ssh_key": "deployKey"}},
        {"name": OTHER, "identity": {"name": "Bystander", "email": "bystander@fleet.test"}},
    ]})
    directory = tmp_path_factory.mktemp("audit")
    outputs = directory / "outputs.json"
    outputs.write_text(json.dumps(stack.up()))
    return outputs, directory / "audit.jsonl"


def run_cli(files: tuple[Path, Path], *argv: str) -> tuple[int, str, str]:
    outputs, log = files
    out, err = io.StringIO(), io.StringIO()
    status = cli(["--outputs", str(outputs), *argv], out, err, {"AGENTFLEET_AUDIT_LOG": str(log)})
    return status, out.getvalue(), err.getvalue()


def when(entry: dict) -> datetime:
    return datetime.fromisoformat(entry["time"])


def test_pushes_by_exec_and_by_plain_ssh_are_both_on_record(files, git_server: GitServer, tmp_path):
    begun = datetime.now(UTC)
    status, _, err = run_cli(files, "exec", AGENT, "--", f"git commit -q --allow-empty -m via-exec && {EXEC_PUSH}")
    assert status == 0, err
    assert run_cli(files, "ssh-config", "--output", str(tmp_path / "ssh"))[0] == 0
    login = subprocess.run(
        ["ssh", "-F", str(tmp_path / "ssh" / "ssh_config"), "-o", "BatchMode=yes", AGENT,
         f"cd ~/workspace && git commit -q --allow-empty -m via-ssh && {SSH_PUSH}"],
        capture_output=True, text=True, timeout=120)
    assert login.returncode == 0, login.stderr
    assert run_cli(files, "exec", OTHER, "--", "git", "init", "-q")[0] == 0
    ended = datetime.now(UTC)
    assert {"via-exec", "via-ssh"} <= set(git_server.branch_authors())

    status, out, err = run_cli(files, "audit", AGENT, "--json")
    assert (status, err) == (0, "")
    entries = [json.loads(line) for line in out.splitlines()]
    assert {entry["agent"] for entry in entries} == {AGENT}
    assert [when(entry) for entry in entries] == sorted(when(entry) for entry in entries)
    git = {entry["command"]: entry for entry in entries if entry["source"] == "git" and entry["depth"] == 0}
    by_exec, by_ssh = git[EXEC_PUSH], git[SSH_PUSH]
    for push in (by_exec, by_ssh):
        assert push["exit_status"] == 0 and push["duration_s"] > 0
        assert begun <= when(push) <= ended
    assert when(by_exec) < when(by_ssh)
    # cloud-init's first clone, at boot, is on record too: git traces whoever runs it.
    clones = [entry for command, entry in git.items() if command.startswith("git clone --quiet ")]
    assert len(clones) == 1 and clones[0]["exit_status"] == 0 and when(clones[0]) < begun

    operator = [entry for entry in entries if entry["source"] == "operator"]
    exec_entry = next(entry for entry in operator if entry["command"].endswith(EXEC_PUSH))
    assert exec_entry["exit_status"] == 0 and begun <= when(exec_entry) <= when(by_exec)
    assert not any("via-ssh" in entry["command"] for entry in operator)  # ssh bypasses the client
    logged = files[1].read_text()
    assert EXEC_PUSH in logged and SSH_PUSH not in logged


def test_since_leaves_out_what_came_before(files):
    status, out, _ = run_cli(files, "audit", AGENT, "--json")
    ssh_push = next(json.loads(line) for line in out.splitlines() if SSH_PUSH in line)
    status, out, err = run_cli(files, "audit", AGENT, "--json", "--since", ssh_push["time"])
    assert (status, err) == (0, "")
    commands = [json.loads(line)["command"] for line in out.splitlines()]
    assert commands[0] == SSH_PUSH and not any("via-exec" in command for command in commands)


def test_the_table_shows_both_agents(files):
    status, out, err = run_cli(files, "audit", "--since", "1h")
    assert (status, err) == (0, "")
    rows = out.splitlines()
    assert rows[0].split() == ["TIME", "(UTC)", "AGENT", "SOURCE", "EXIT", "SECONDS", "COMMAND"]
    assert any(row.split()[1:3] == [OTHER, "git"] and row.endswith("git init -q") for row in rows)
    assert any(row.split()[1:4] == [AGENT, "git", "0"] and row.endswith(SSH_PUSH) for row in rows)
