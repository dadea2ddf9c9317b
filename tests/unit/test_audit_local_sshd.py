"""Real-sshd tests of the audit trail: commands run through the CLI and the API against the
throwaway OpenSSH server (tests/conftest.py) are found in the operator's log, and git's trace2
events, written by real git in the agents and read back over SSH, merge with them."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentfleet import Fleet
from agentfleet.audit import AuditLog
from agentfleet.cli import main
from agentfleet.timeline import GIT, OPERATOR, timeline
from agentfleet.trace2 import TRACE_DIR, judge_read, read_command


@pytest.fixture
def log_path(tmp_path) -> Path:
    return tmp_path / "audit" / "audit.jsonl"


@pytest.fixture
def cli(outputs_file, log_path):
    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = main(
            ["--outputs", str(outputs_file), *argv], out, err, {"AGENTFLEET_AUDIT_LOG": str(log_path)}
        )
        return status, out.getvalue(), err.getvalue()

    return run


def records(log_path: Path) -> list[dict]:
    return [json.loads(line) for line in log_path.read_text().splitlines()]


def test_exec_is_on_record_with_its_exit_status(cli, log_path, local_sshd):
    before = datetime.now(UTC)
    assert cli("exec", "agent-1", "--", "git", "log", "-1", "--format=%s")[:2] == (0, "seed\n")
    printing = """sh -c 'echo out""put-1; echo err-$((40 + 2)) >&2; exit 7'"""
    assert cli("exec", "agent-2", "--", printing)[:3] == (7, "output-1\n", "err-42\n")
    after = datetime.now(UTC)
    first, second = records(log_path)
    workspace = local_sshd.homes["agent-1"] / "workspace"
    assert {key: first[key] for key in ("agent", "stack", "command", "exit_status", "error")} == {
        "agent": "agent-1",
        "stack": "outputs",  # the fleet from outputs.json
        "command": f"cd {workspace} || exit; git log -1 --format=%s",
        "exit_status": 0,
        "error": None,
    }
    assert (second["agent"], second["exit_status"]) == ("agent-2", 7)
    for record in (first, second):
        assert before <= datetime.fromisoformat(record["time"]) <= after
        assert 0 < record["duration_s"] < (after - before).total_seconds()
    assert not any(output in log_path.read_text() for output in ("seed", "output-1", "err-42"))


def test_exec_all_timeout_and_doctor_are_on_record(cli, log_path, local_sshd):
    assert cli("exec", "--all", "--", "git", "rev-parse", "--abbrev-ref", "HEAD")[0] == 0
    assert cli("exec", "--timeout", "0.5", "agent-1", "--", "sleep", "5")[0] == 124
    # The agents' cloud-init (a stub first on their PATH) reports a failed boot, so doctor fails.
    stub = local_sshd.stub_bin / "cloud-init"
    stub.write_text("#!/bin/sh\necho 'status: error'\nexit 1\n")
    stub.chmod(0o755)
    try:
        assert cli("doctor", "agent-2")[0] == 1
    finally:
        stub.unlink()
    logged = records(log_path)
    assert sorted((r["agent"], r["exit_status"]) for r in logged[:2]) == [("agent-1", 0), ("agent-2", 0)]
    assert (logged[2]["exit_status"], logged[2]["error"]) == (None, "timed out after 0.5 s")
    doctor = [(r["agent"], r["command"].split()[4:6], r["exit_status"]) for r in logged[3:]]
    assert doctor == [
        ("agent-2", ["cloud-init", "status"], 1),
        ("agent-2", ["cloud-init", "status"], 1),  # --long, for the reason
        ("agent-2", ["git", "config"], 0),
        ("agent-2", ["git", "-C"], 0),  # the workspace holds a repository
        ("agent-2", ["git", "-C"], 0),  # so the remote is asked through its origin
        ("agent-2", ["env", "GIT_TERMINAL_PROMPT=0"], 0),
    ]


def test_an_unreachable_agent_is_on_record_too(tmp_path, local_sshd, log_path):
    raw = local_sshd.outputs()
    raw["agents"]["agent-1"]["port"] = 1
    raw["agents"]["agent-1"]["known_hosts"] = local_sshd.known_hosts("agent-1").replace(
        f"]:{local_sshd.ports['agent-1']} ", "]:1 "
    )
    with Fleet.from_outputs(raw, "dev", audit=AuditLog(log_path, "dev")) as fleet:
        outcomes = fleet.run_all(["git", "status"])
    assert outcomes["agent-2"].ok
    (failed,) = [record for record in records(log_path) if record["agent"] == "agent-1"]
    assert (failed["exit_status"], failed["error"]) == (None, "unreachable: connection refused")


def test_git_traces_read_over_ssh_merge_with_the_log(local_sshd, log_path, tmp_path):
    """Real git in the agent writes trace2 files (to a directory of the test's instead of
    TRACE_DIR); the read command over SSH brings them back; both sources merge."""
    traces = tmp_path / "git-trace2"
    traces.mkdir(mode=0o1777)
    log = AuditLog(log_path, "local")
    before = datetime.now(UTC)
    with Fleet.from_outputs(local_sshd.outputs(), "local", audit=log) as fleet:
        agent = fleet.agent("agent-1")
        assert agent.run(f"GIT_TRACE2_EVENT={traces} git status --short --branch").ok
        trace = judge_read("agent-1", agent.run(read_command(str(traces)), cwd="/"))
    after = datetime.now(UTC)
    assert trace.problem is None
    entries = timeline(log.records()[0], [trace], "local", ["agent-1"])
    traced = [entry for entry in entries if entry.source == GIT and entry.depth == 0]
    assert [(entry.command, entry.exit_status) for entry in traced] == [("git status --short --branch", 0)]
    assert before <= traced[0].time <= after
    operator = [entry for entry in entries if entry.source == OPERATOR]
    assert operator[0].command.endswith(f"GIT_TRACE2_EVENT={traces} git status --short --branch")
    assert operator[0].time <= traced[0].time  # the client started it; git ran inside it
    assert entries == sorted(entries, key=lambda entry: entry.time)


def test_audit_cli_reports_agents_without_traces_and_shows_the_log(cli, log_path):
    assert not Path(TRACE_DIR).exists(), "this machine is not an agent: the local agents have no traces"
    cli("exec", "agent-2", "--", "git", "status", "--short")
    status, out, err = cli("audit", "--json")
    assert status == 1
    problems = err.splitlines()
    assert [problem.split(":")[0] for problem in problems] == ["agent-1", "agent-2"]
    assert all(f"no git trace directory {TRACE_DIR}" in problem for problem in problems)
    entries = [json.loads(line) for line in out.splitlines()]
    assert entries[0]["command"].endswith("git status --short") and entries[0]["agent"] == "agent-2"
    reads = entries[1:]  # the audit's own reads are on record, exit 3: no trace directory
    assert sorted((entry["agent"], entry["exit_status"]) for entry in reads) == [
        ("agent-1", 3),
        ("agent-2", 3),
    ]
