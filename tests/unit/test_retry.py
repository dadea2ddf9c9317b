"""`--retry N` and `run(..., retries=N)`: a failed command is tried again after a growing wait,
each attempt on record in the audit log. Real sshd (the `local_sshd` fixture), real shells."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest

from agentfleet import Fleet
from agentfleet.audit import AuditLog
from agentfleet.cli import main
from agentfleet.errors import CommandTimeout, Unreachable
from agentfleet.retry import Backoff

QUICK = Backoff(delay=0.01, ceiling=0.05)


def flaky(marker: Path, failures: int) -> str:
    """A shell line that exits 3 on its first `failures` runs, then prints 'done'."""
    return (f"n=$(cat {marker} 2>/dev/null || echo 0); echo $((n + 1)) > {marker}; "
            f"if [ $n -lt {failures} ]; then echo try $n >&2; exit 3; fi; echo done")


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def cli(log: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out, err, {"AGENTFLEET_AUDIT_LOG": str(log)})
    return status, out.getvalue(), err.getvalue()


def test_waits_double_with_jitter_up_to_the_ceiling():
    backoff = Backoff(delay=1.0, ceiling=5.0)
    for attempt, full in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)):
        waits = [backoff.wait(attempt) for _ in range(50)]
        assert all(full / 2 <= wait <= full for wait in waits), (attempt, waits)
        assert len(set(waits)) > 1  # jitter: agents that failed together do not return together


def test_exec_retry_runs_a_failed_command_again_and_records_each_attempt(tmp_path, outputs_file):
    log = tmp_path / "audit.jsonl"
    status, out, err = cli(log, "--outputs", str(outputs_file), "exec", "--retry", "3", "agent-1",
                           "--", flaky(tmp_path / "n", 2))
    assert (status, out) == (0, "done\n")
    assert "agentfleet: agent-1: attempt 1 failed (exit status 3); trying again in" in err
    assert "agentfleet: agent-1: attempt 2 failed (exit status 3)" in err
    assert [(r["attempt"], r["exit_status"]) for r in records(log)] == [(1, 3), (2, 3), (3, 0)]
    assert len({r["command"] for r in records(log)}) == 1


def test_exec_without_retry_tries_once(tmp_path, outputs_file):
    log = tmp_path / "audit.jsonl"
    status, _, err = cli(log, "--outputs", str(outputs_file), "exec", "agent-1", "--", flaky(tmp_path / "n", 1))
    assert status == 3 and "attempt" not in err
    assert [(r["attempt"], r["exit_status"]) for r in records(log)] == [(1, 3)]


def test_exec_all_retries_each_agent_on_its_own_and_reports_the_last_attempt(tmp_path, outputs_file):
    log = tmp_path / "audit.jsonl"
    command = f'case $HOME in *agent-1*) exit 7;; esac; {flaky(tmp_path / "n", 1)}'
    status, out, err = cli(log, "--outputs", str(outputs_file), "exec", "--all", "--retry", "1", "--", command)
    assert status == 1
    assert out.splitlines() == ["agent-2 | done"]
    assert "agent-1 | agentfleet: agent-1: attempt 1 failed (exit status 7)" in err
    assert "agent-2 | agentfleet: agent-2: attempt 1 failed (exit status 3)" in err
    assert err.endswith("agent-1: exit status 7\n1 ok, 1 failed\n")
    attempts = sorted((r["agent"], r["attempt"], r["exit_status"]) for r in records(log))
    assert attempts == [("agent-1", 1, 7), ("agent-1", 2, 7), ("agent-2", 1, 3), ("agent-2", 2, 0)]


def test_negative_retry_is_a_usage_error(tmp_path, outputs_file):
    status, _, err = cli(tmp_path / "log", "--outputs", str(outputs_file), "exec", "--retry", "-1", "agent-1", "--", "true")
    assert status == 2 and "must be 0 or more" in err


def test_api_retries_an_unreachable_agent_then_raises(tmp_path, local_sshd):
    raw = local_sshd.outputs()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    kind, blob = local_sshd.host_key.public.split()[:2]
    raw["agents"]["agent-1"].update(port=closed, known_hosts=f"[127.0.0.1]:{closed} {kind} {blob}")
    log = AuditLog(tmp_path / "audit.jsonl", "test")
    notices: list[tuple[str, int, str]] = []
    with Fleet.from_outputs(raw, "test", audit=log) as fleet:
        outcomes = fleet.run_all("true", retries=2, backoff=QUICK,
                                 on_retry=lambda name, attempt, why, wait: notices.append((name, attempt, why)))
    assert isinstance(outcomes["agent-1"], Unreachable) and outcomes["agent-2"].ok
    assert notices == [("agent-1", 1, "unreachable: connection refused"), ("agent-1", 2, "unreachable: connection refused")]
    tries = [(r["attempt"], r["error"]) for r in records(log.path) if r["agent"] == "agent-1"]
    assert tries == [(n, "unreachable: connection refused") for n in (1, 2, 3)]


def test_api_does_not_retry_a_timeout(tmp_path, local_sshd):
    log = AuditLog(tmp_path / "audit.jsonl", "test")
    with Fleet.from_outputs(local_sshd.outputs(), "test", audit=log) as fleet:
        with pytest.raises(CommandTimeout):
            fleet.agent("agent-1").run("sleep 5", timeout=0.5, retries=3, backoff=QUICK)
    assert [r["attempt"] for r in records(log.path)] == [1]
