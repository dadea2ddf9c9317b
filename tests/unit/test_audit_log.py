"""Tier 1: the operator's audit log, written and read on the local filesystem (no SSH)."""

from __future__ import annotations

import json
import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentfleet import errors
from agentfleet.audit import AuditLog, AuditRecord, audit_log_for, local_user, redact
from agentfleet.result import Result
from agentfleet.source import Source


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_command_becomes_one_record(tmp_path):
    log = AuditLog(tmp_path / "dev" / "audit.jsonl", "dev")
    before = datetime.now(UTC)
    result = log.run("agent-1", "cd /w || exit; git push", lambda: Result("x", 3, "out", "err"))
    after = datetime.now(UTC)
    assert result == Result("x", 3, "out", "err")
    [record] = lines(log.path)
    assert set(record) == {
        "time",
        "agent",
        "stack",
        "operator",
        "command",
        "exit_status",
        "duration_s",
        "error",
        "attempt",
    }
    assert record["agent"] == "agent-1" and record["stack"] == "dev" and record["operator"] == local_user()
    assert record["command"] == "cd /w || exit; git push"
    assert (record["exit_status"], record["error"], record["attempt"]) == (3, None, 1)
    assert record["time"].endswith("Z") and before <= AuditRecord.from_json(record).time <= after
    assert 0 <= record["duration_s"] <= (after - before).total_seconds()


def test_the_log_and_its_directory_are_private(tmp_path):
    log = AuditLog(tmp_path / "new" / "audit.jsonl", "dev")
    old = os.umask(0)
    try:
        log.run("agent-1", "true", lambda: Result("true", 0, "", ""))
    finally:
        os.umask(old)
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.path.parent.stat().st_mode) == 0o700


def test_records_are_appended_never_rewritten(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text('{"earlier": "line"}\n')
    log = AuditLog(path, "dev")
    for status in (0, 1):
        log.run("agent-1", "git status", lambda status=status: Result("x", status, "", ""))
    assert path.read_text().startswith('{"earlier": "line"}\n')
    assert [record.get("exit_status") for record in lines(path)] == [None, 0, 1]


def test_concurrent_commands_never_interleave(tmp_path):
    """Records well over a pipe buffer, from many threads at once: every line stays whole."""
    log = AuditLog(tmp_path / "audit.jsonl", "dev")
    start = threading.Barrier(16)

    def agent(index: int) -> None:
        start.wait()
        for round_ in range(25):
            command = f"echo {index}-{round_} " + "x" * 20000
            log.run(f"agent-{index}", command, lambda: Result("x", index, "", ""))

    threads = [threading.Thread(target=agent, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = lines(log.path)
    assert len(records) == 16 * 25
    assert sorted({record["agent"] for record in records}) == sorted(f"agent-{i}" for i in range(16))
    for record in records:
        assert record["command"].startswith(f"echo {record['exit_status']}-")


def test_no_output_and_no_credentials_are_recorded(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", "dev")
    command = (
        "GITHUB_TOKEN=ghp_TOPSECRET1 git -c 'http.extraHeader=Authorization: Bearer TOPSECRET2' "
        "push https://x-access-token:TOPSECRET3@github.com/o/r.git && DB_PASSWORD='TOP SECRET4' true"
    )
    log.run("agent-1", command, lambda: Result(command, 0, "TOPSECRET-OUT", "TOPSECRET-ERR"))
    with pytest.raises(errors.CommandTimeout):

        def times_out() -> Result:
            raise errors.CommandTimeout("agent-1", "cat key", 0.5, "TOPSECRET-TAIL")

        log.run("agent-1", "cat key", times_out)
    text = log.path.read_text()
    assert "TOPSECRET" not in text and "SECRET4" not in text
    first, second = lines(log.path)
    assert first["command"] == (
        "GITHUB_TOKEN=<redacted> git -c 'http.extraHeader=Authorization: Bearer <redacted>' "
        "push https://<redacted>@github.com/o/r.git && DB_PASSWORD=<redacted> true"
    )
    assert (second["exit_status"], second["error"]) == (None, "timed out after 0.5 s")


def test_redaction_keeps_what_is_not_a_secret():
    kept = "git clone ssh://git@github.com/o/r.git && git config user.email a@b.c && KEY_COUNT=3 true"
    assert redact(kept) == kept


def test_a_command_that_never_ran_is_recorded_with_why(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", "dev")

    def refused() -> Result:
        raise errors.Unreachable("agent-1", "127.0.0.1:1", "connection refused")

    with pytest.raises(errors.Unreachable):
        log.run("agent-1", "git status", refused)
    [record] = lines(log.path)
    assert (record["exit_status"], record["error"]) == (None, "unreachable: connection refused")


def test_an_unwritable_log_stops_the_command_before_it_runs(tmp_path):
    log = AuditLog(tmp_path / "is-a-directory", "dev")
    log.path.mkdir()
    ran = []
    with pytest.raises(errors.AuditLogError) as refused:
        log.run("agent-1", "git push", lambda: ran.append(1) or Result("x", 0, "", ""))
    assert ran == []
    message = str(refused.value)
    assert message.startswith(
        f"the command was not run: cannot open the audit log {log.path} (is a directory)"
    )
    assert message.endswith("set AGENTFLEET_AUDIT_LOG to another file")


def test_records_read_back_and_bad_lines_are_counted(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", "dev")
    assert log.records() == ([], 0)
    log.run("agent-1", "git status", lambda: Result("x", 0, "", ""))
    with log.path.open("a") as file:
        file.write('{"time": "yesterday"}\nnot json\n\n')
    log.run("agent-2", "git log", lambda: Result("x", 1, "", ""))
    records, bad = log.records()
    assert [(r.agent, r.command, r.exit_status) for r in records] == [
        ("agent-1", "git status", 0),
        ("agent-2", "git log", 1),
    ]
    assert bad == 2
    assert records[1].time - records[0].time < timedelta(seconds=5)


def test_records_written_before_attempts_were_counted_read_as_first_attempts(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", "dev")
    log.run("agent-1", "git push", lambda: Result("x", 0, "", ""), attempt=2)
    old = {key: value for key, value in lines(log.path)[0].items() if key != "attempt"}
    with log.path.open("a") as file:
        file.write(json.dumps(old) + "\n")
    records, bad = log.records()
    assert [record.attempt for record in records] == [2, 1] and bad == 0


def source(stack: str | None, project: Path | None) -> Source:
    outputs = None if stack else Path("/somewhere/fleet.json")
    return Source(name=stack or "fleet", stack=stack, outputs_file=outputs, project_dir=project)


def test_where_the_log_is(tmp_path):
    project = tmp_path / "project"
    assert audit_log_for(source("dev", project), {}) == AuditLog(
        project / ".agentfleet/dev/audit.jsonl", "dev"
    )
    assert audit_log_for(source(None, project), {}) is None
    mine = tmp_path / "mine.jsonl"
    environ = {"AGENTFLEET_AUDIT_LOG": str(mine)}
    assert audit_log_for(source("dev", project), environ) == AuditLog(mine, "dev")
    assert audit_log_for(source(None, None), environ) == AuditLog(mine, "fleet")
