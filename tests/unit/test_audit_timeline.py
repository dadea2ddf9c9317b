"""Tier 1: merging the operator's log with git's traces, --since, rendering, and `agentfleet audit`
in-process against agents that refuse connections (no SSH server needed)."""

from __future__ import annotations

import io
import json
import socket
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentfleet.audit import AuditRecord
from agentfleet.cli import main
from agentfleet.render import render_audit_json, render_audit_table
from agentfleet.timeline import GIT, OPERATOR, Entry, git_entry, parse_since, timeline
from agentfleet.trace2 import AgentTrace, parse_events, read_command

FIXTURES = Path(__file__).parent / "fixtures" / "trace2"
T0 = datetime(2026, 11, 26, 21, 41, 20, tzinfo=UTC)  # just before the recorded push


def record(
    agent: str, seconds: float, command: str = "git status", stack: str = "dev", **changes
) -> AuditRecord:
    values = dict(
        time=T0 + timedelta(seconds=seconds),
        agent=agent,
        stack=stack,
        operator="alice",
        command=command,
        exit_status=0,
        duration_s=0.25,
    )
    values.update(changes)
    return AuditRecord(**values)


def trace(agent: str, case: str) -> AgentTrace:
    return AgentTrace(agent, tuple(parse_events((FIXTURES / f"{case}.txt").read_text())))


def test_both_sources_merge_by_time():
    records = [record("agent-1", 0.5, "cd /w || exit; git push -q origin HEAD:main"), record("agent-2", 9)]
    entries = timeline(records, [trace("agent-1", "push-local")], "dev", ["agent-1", "agent-2"])
    assert [(entry.source, entry.agent, entry.depth) for entry in entries] == [
        (OPERATOR, "agent-1", 0),
        (GIT, "agent-1", 0),
        *[(GIT, "agent-1", depth) for depth in (1, 1, 2, 2, 3, 2)],
        (OPERATOR, "agent-2", 0),
    ]
    operator, push = entries[:2]
    assert operator == Entry(
        T0 + timedelta(seconds=0.5),
        "agent-1",
        OPERATOR,
        "cd /w || exit; git push -q origin HEAD:main",
        0,
        0.25,
        operator="alice",
    )
    assert push == Entry(
        datetime(2026, 11, 26, 21, 41, 20, 920523, tzinfo=UTC),
        "agent-1",
        GIT,
        "git push -q origin HEAD:main",
        0,
        0.059554,
    )


def test_only_this_stack_these_agents_and_since():
    records = [
        record("agent-1", 1),
        record("agent-1", 2, stack="prod"),
        record("agent-2", 3),
        record("agent-1", 100, "git log"),
    ]
    traces = [trace("agent-1", "push-local")]
    assert [entry.command for entry in timeline(records, traces, "dev", ["agent-2"])] == ["git status"]
    later = timeline(records, traces, "dev", ["agent-1"], since=T0 + timedelta(seconds=50))
    assert [(entry.source, entry.command) for entry in later] == [(OPERATOR, "git log")]


def test_git_entries_say_why_there_is_no_exit_and_hide_credentials():
    killed, piped = [git_entry("agent-1", process) for process in trace("agent-1", "unfinished").processes]
    assert (killed.exit_status, killed.duration_s, killed.error) == (
        None,
        None,
        "no exit on record (still running, or killed)",
    )
    assert (piped.exit_status, piped.error) == (None, "killed by signal 13")
    ls_remote = git_entry("agent-1", trace("agent-1", "commands-all-events").processes[2])
    assert ls_remote.command == "git ls-remote https://<redacted>@127.0.0.1:53189/app.git"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10m", T0 - timedelta(minutes=10)),
        ("2h", T0 - timedelta(hours=2)),
        ("1d", T0 - timedelta(days=1)),
        ("45s", T0 - timedelta(seconds=45)),
        ("2026-11-26T20:00:00Z", datetime(2026, 11, 26, 20, tzinfo=UTC)),
        ("2026-11-26T21:00:00+01:00", datetime(2026, 11, 26, 20, tzinfo=UTC)),
        ("2026-11-26 20:00", datetime(2026, 11, 26, 20).astimezone(UTC)),  # local time
    ],
)
def test_since(text, expected):
    assert parse_since(text, T0) == expected


@pytest.mark.parametrize("text", ["yesterday", "10 minutes", "-5m", "5y", ""])
def test_since_refuses_what_it_cannot_read(text):
    with pytest.raises(ValueError, match="neither an ISO time nor an age such as 10m, 2h, 1d"):
        parse_since(text, T0)


def test_table_and_json_lines():
    entries = [
        Entry(T0, "agent-1", OPERATOR, "cd /w || exit; git push", 0, 1.5, operator="alice"),
        Entry(T0 + timedelta(seconds=1), "agent-1", GIT, "git pack-objects", 0, 0.01, depth=1),
        Entry(
            T0 + timedelta(seconds=2), "agent-10", OPERATOR, "git fetch", None, 30.0, "timed out after 30 s"
        ),
    ]
    assert render_audit_table(entries) == (
        "TIME (UTC)            AGENT     SOURCE    EXIT  SECONDS  COMMAND\n"
        "2026-11-26T21:41:20Z  agent-1   operator  0     1.50     cd /w || exit; git push\n"
        "2026-11-26T21:41:21Z  agent-1   git       0     0.01       git pack-objects\n"
        "2026-11-26T21:41:22Z  agent-10  operator  -     30.00    git fetch  (timed out after 30 s)\n"
    )
    first, _, last = [json.loads(line) for line in render_audit_json(entries).splitlines()]
    assert first == {
        "time": "2026-11-26T21:41:20.000000Z",
        "agent": "agent-1",
        "source": "operator",
        "command": "cd /w || exit; git push",
        "exit_status": 0,
        "duration_s": 1.5,
        "error": None,
        "operator": "alice",
        "depth": 0,
    }
    assert (last["exit_status"], last["error"]) == (None, "timed out after 30 s")


# --- `agentfleet audit` in-process, against agents that refuse connections ---------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def refusing_outputs(tmp_path, make_key) -> Path:
    host = make_key("host").public.split()
    agents, keys = {}, {}
    for name in ("agent-1", "agent-2"):
        port = closed_port()
        agents[name] = {
            "backend": "docker",
            "host": "127.0.0.1",
            "port": port,
            "user": "agent",
            "known_hosts": f"[127.0.0.1]:{port} {host[0]} {host[1]}",
            "identity": {"name": name, "email": f"{name}@example.com"},
            "remote": None,
            "branch": f"agent/{name}",
            "workspace": "/home/agent/workspace",
            "remote_public_key": None,
            "ssh_config": "",
        }
        keys[name] = make_key(name).private
    path = tmp_path / "dev.json"  # the fleet is named after the file: "dev"
    path.write_text(json.dumps({"agents": agents, "agent_private_keys": keys}))
    return path


def run_cli(*argv: str, environ: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out, err, environ)
    return status, out.getvalue(), err.getvalue()


def write_log(path: Path, *records: AuditRecord) -> None:
    path.write_text("".join(json.dumps(record.to_json()) + "\n" for record in records))


def test_audit_shows_the_log_and_reports_each_unreachable_agent(refusing_outputs, tmp_path):
    log = tmp_path / "audit.jsonl"
    write_log(log, record("agent-1", 0, "git push"), record("agent-2", 1, "git fetch", exit_status=1))
    environ = {"AGENTFLEET_AUDIT_LOG": str(log)}
    status, out, err = run_cli("--outputs", str(refusing_outputs), "audit", environ=environ)
    assert status == 1
    rows = out.splitlines()
    assert rows[0].split() == ["TIME", "(UTC)", "AGENT", "SOURCE", "EXIT", "SECONDS", "COMMAND"]
    assert rows[1].split()[1:5] == ["agent-1", "operator", "0", "0.25"] and rows[1].endswith("git push")
    assert rows[2].split()[1:4] == ["agent-2", "operator", "1"] and rows[2].endswith("git fetch")
    # The two failed reads of the git traces are on record themselves, after the older entries.
    assert len(rows) == 5 and all("(unreachable: connection refused)" in row for row in rows[3:])
    problems = err.splitlines()
    assert [problem.split(":")[0] for problem in problems] == ["agent-1", "agent-2"]
    assert all("cannot reach 127.0.0.1:" in problem for problem in problems)


def test_audit_of_one_agent_as_json_lines_since_a_time(refusing_outputs, tmp_path):
    log = tmp_path / "audit.jsonl"
    now = datetime.now(UTC)
    two_hours_ago = replace(record("agent-1", 0), time=now - timedelta(hours=2))
    write_log(log, two_hours_ago, replace(record("agent-1", 0, "git log"), time=now))
    environ = {"AGENTFLEET_AUDIT_LOG": str(log)}
    status, out, err = run_cli(
        "--outputs", str(refusing_outputs), "audit", "agent-1", "--since", "1h", "--json", environ=environ
    )
    entries = [json.loads(line) for line in out.splitlines()]
    assert status == 1 and err.startswith("agent-1: agent-1: cannot reach")
    assert [(entry["agent"], entry["source"]) for entry in entries] == [("agent-1", "operator")] * 2
    assert entries[0]["command"] == "git log"
    assert entries[1]["command"] == f"cd / || exit; {read_command()}"


def test_audit_without_an_operator_log_says_so(refusing_outputs):
    status, out, err = run_cli("--outputs", str(refusing_outputs), "audit", environ={})
    assert status == 1 and out.splitlines()[1:] == []
    assert err.startswith(
        f"no operator log for outputs file {refusing_outputs}: only a stack's commands are logged, "
        "unless AGENTFLEET_AUDIT_LOG names a log\n"
    )


def test_audit_usage_errors(refusing_outputs):
    status, _, err = run_cli("--outputs", str(refusing_outputs), "audit", "--since", "soon", environ={})
    assert status == 2 and "argument --since: 'soon' is neither an ISO time" in err
    status, _, err = run_cli("--outputs", str(refusing_outputs), "audit", "agent-9", environ={})
    assert (status, err) == (2, "agentfleet: no agent named 'agent-9'; known agents: agent-1, agent-2\n")
