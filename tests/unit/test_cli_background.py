"""The fast `agentfleet exec`: a stack's outputs kept until its state changes, and the
background connection (agentfleet.master) that later calls hand their command to.

The agents are the throwaway sshd's; `pulumi` is a stub on PATH that prints their outputs and
counts its calls; the stack's state is a file where Pulumi's file backend keeps it. The master
is the real one, started by the CLI as a user's call starts it.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentfleet.cli import main
from agentfleet.control import SOCKET_NAME, socket_address

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PEER = struct.Struct("3i")  # struct ucred: pid, uid, gid
WAIT = 20.0


@dataclass
class Stack:
    project: Path
    state: Path
    calls: Path
    environ: dict[str, str]

    @property
    def directory(self) -> Path:
        return self.project / ".agentfleet" / "dev"

    def cli(self, *argv: str, **env: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = main(["--cwd", str(self.project), *argv], out, err, {**self.environ, **env})
        return status, out.getvalue(), err.getvalue()

    def pulumi_calls(self) -> int:
        return len(self.calls.read_text().splitlines()) if self.calls.exists() else 0

    def change_state(self) -> None:
        """What `pulumi up` does to the stack's state file."""
        self.state.write_text(self.state.read_text() + " ")

    def wait_for_master(self, pid: int | None = None) -> int:
        """The process id of the master once one listens (another than `pid`)."""
        found = self.master_since(pid, WAIT)
        if found is None:
            log = self.directory / "control.log"
            pytest.fail(f"no master within {WAIT:g} s; its log: {log.read_text() if log.exists() else '(none)'}")
        return found

    def master_since(self, pid: int | None, wait_s: float = 5.0) -> int | None:
        """The process id of a master other than `pid` once it listens, within `wait_s`; else None.
        Told by the listener's credentials, not the socket file: a new socket may get the inode
        of the one just removed."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            found = self.listener_pid()
            if found is not None and found != pid:
                return found
            time.sleep(0.05)
        return None

    def listener_pid(self) -> int | None:
        """Who listens on the master's socket (SO_PEERCRED of a connection that sends nothing)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(socket_address(self.directory / SOCKET_NAME))
            except OSError:
                return None
            return PEER.unpack(probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEER.size))[0]


@pytest.fixture
def stack(tmp_path, local_sshd, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: agentfleet\nruntime: python\n")
    state = tmp_path / "state" / ".pulumi" / "stacks" / "agentfleet" / "dev.json"
    state.parent.mkdir(parents=True)
    state.write_text("{}")
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(local_sshd.outputs()))
    calls = tmp_path / "pulumi-calls"
    stub = tmp_path / "bin" / "pulumi"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\necho "$*" >> {calls}\ncat {outputs}\n')
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub.parent}:{os.environ['PATH']}")
    environ = {"PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}", "AGENTFLEET_PERSIST": "60"}
    made = Stack(project, state, calls, environ)
    yield made
    made.cli("disconnect")


def test_outputs_are_read_once_while_the_state_is_unchanged(stack):
    for _ in range(2):
        assert stack.cli("exec", "agent-1", "--", "git config user.email", AGENTFLEET_PERSIST="0")[:2] == (
            0,
            "agent-1@example.com\n",
        )
    assert stack.calls.read_text() == "stack output --json --show-secrets --stack dev\n"
    kept = stack.directory / "outputs.json"
    assert (kept.stat().st_mode & 0o777, stack.directory.stat().st_mode & 0o777) == (0o600, 0o700)
    stack.change_state()
    assert stack.cli("ls", "--json")[0] == 0
    assert stack.pulumi_calls() == 2


def test_nothing_is_kept_without_a_file_backend(stack):
    for _ in range(2):
        assert stack.cli("exec", "agent-1", "--", "true", PULUMI_BACKEND_URL="")[0] == 0
    assert stack.pulumi_calls() == 2
    assert not (stack.directory / "outputs.json").exists()
    assert not (stack.directory / SOCKET_NAME).exists()


def agentfleet(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    """The CLI as its own process, the way a user's shell runs it, with its imports listed."""
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "agentfleet", "--cwd", str(stack.project), *argv],
        env={**os.environ, **stack.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_later_calls_run_through_the_background_connection(stack, local_sshd):
    assert stack.cli("exec", "agent-1", "--", "true")[0] == 0  # in-process; starts the master
    stack.wait_for_master()
    done = agentfleet(stack, "exec", "agent-2", "--", "sh", "-c", "git config user.email; echo oops >&2; exit 3")
    assert (done.returncode, done.stdout) == (3, "agent-2@example.com\n")
    assert "oops\n" in done.stderr
    assert "paramiko" not in done.stderr  # no SSH library loaded: the master ran it
    audit = [json.loads(line) for line in (stack.directory / "audit.jsonl").read_text().splitlines()]
    assert [(record["agent"], record["exit_status"]) for record in audit] == [("agent-1", 0), ("agent-2", 3)]
    assert stack.pulumi_calls() == 1


def test_the_background_connection_reports_failures_as_the_cli_does(stack):
    assert stack.cli("exec", "agent-1", "--", "true")[0] == 0
    stack.wait_for_master()
    unknown = agentfleet(stack, "exec", "nobody", "--", "true")
    assert unknown.returncode == 2
    assert "agentfleet: no agent named 'nobody'; known agents: agent-1, agent-2\n" in unknown.stderr
    slow = agentfleet(stack, "exec", "--timeout", "0.5", "agent-1", "--", "sleep", "5")
    assert slow.returncode == 124 and "timed out after 0.5 s" in slow.stderr
    assert "paramiko" not in unknown.stderr + slow.stderr


def test_a_changed_state_retires_the_master(stack):
    assert stack.cli("exec", "agent-1", "--", "true")[0] == 0
    first = stack.wait_for_master()
    stack.change_state()  # `pulumi up` ran: the agents may be others now
    assert stack.cli("exec", "agent-1", "--", "git config user.name")[:2] == (0, "Agent 1\n")
    assert stack.pulumi_calls() == 2  # read afresh, in-process
    # That call starts a master for the new state; while the old one is still retiring (it holds
    # the lock) the new one steps aside, and the next call starts it again.
    for _ in range(3):
        if stack.master_since(first) is not None:
            break
        assert stack.cli("exec", "agent-1", "--", "true")[0] == 0
    stack.wait_for_master(first)  # a new master, for the new state
    done = agentfleet(stack, "exec", "agent-1", "--", "true")
    assert done.returncode == 0 and "paramiko" not in done.stderr


def test_disconnect_ends_the_master(stack):
    assert stack.cli("exec", "agent-1", "--", "true")[0] == 0
    stack.wait_for_master()
    assert stack.cli("disconnect") == (0, "ended background connection of stack 'dev'\n", "")
    deadline = time.monotonic() + WAIT
    while (stack.directory / SOCKET_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (stack.directory / SOCKET_NAME).exists()
    assert stack.cli("disconnect") == (0, "no background connection of stack 'dev'\n", "")


@pytest.mark.parametrize(("layout", "stack"), [
    (".pulumi/stacks/agentfleet/dev.json", "dev"),  # Pulumi's project-scoped layout
    (".pulumi/stacks/agentfleet/dev.json.gz", "dev"),  # PULUMI_SELF_MANAGED_STATE_GZIP
    (".pulumi/stacks/dev.json", "dev"),  # backends from before projects
    (".pulumi/stacks/other/dev.json", "organization/other/dev"),  # a qualified stack name
])
def test_the_state_file_of_a_file_backend_is_found(tmp_path, layout, stack):
    from agentfleet.cache import state_file, state_key

    (tmp_path / "Pulumi.yaml").write_text("name: agentfleet # the project\nruntime: python\n")
    (tmp_path / layout).parent.mkdir(parents=True)
    (tmp_path / layout).write_text("{}")
    assert state_file(f"file://{tmp_path}", tmp_path, stack) == tmp_path / layout
    assert state_key(f"file://{tmp_path}", tmp_path, stack).startswith(f"{tmp_path / layout}:")


@pytest.mark.parametrize("backend", [None, "", "s3://bucket/agentfleet", "https://api.pulumi.com"])
def test_other_backends_have_no_state_file_to_watch(tmp_path, backend):
    from agentfleet.cache import state_key

    assert state_key(backend, tmp_path, "dev") is None
