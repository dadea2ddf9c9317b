"""Tiers 1-2: git's trace2 events, parsed from files real git wrote (fixtures/trace2), and the
read command run by a real shell over a directory real git writes to (no SSH)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from agentfleet.result import Result
from agentfleet.trace2 import NO_TRACE_DIR, TRACE_DIR, GitProcess, judge_read, parse_events, read_command

FIXTURES = Path(__file__).parent / "fixtures" / "trace2"


def recorded(case: str) -> str:
    return (FIXTURES / f"{case}.txt").read_text()


def test_a_push_and_the_git_processes_it_started():
    processes = parse_events(recorded("push-local"))
    push = processes[0]
    assert push == GitProcess(
        sid="20261126T214120.920277Z-H0a7c9cdf-P00000cfe",
        started=datetime(2026, 11, 26, 21, 41, 20, 920523, tzinfo=UTC),
        argv=("git", "push", "-q", "origin", "HEAD:main"),
        exit_status=0,
        duration_s=0.059554,  # atexit's t_abs: the whole life of the process
    )
    assert push.depth == 0
    # Its children, found by their sids (parent/child), at the depth git started them.
    assert [
        (process.depth, process.argv[1] if process.depth else process.argv[0]) for process in processes
    ] == [
        (0, "git"),
        (1, "../remote.git"),
        (1, "pack-objects"),
        (2, "unpack-objects"),
        (2, "rev-list"),
        (3, "--git-dir=/tmp/t2rec2/remote.git"),
        (2, "gc"),
    ]
    assert all(process.exit_status == 0 for process in processes)
    assert [process.started for process in processes] == sorted(process.started for process in processes)


def test_exit_codes_from_files_with_every_kind_of_event():
    """The unfiltered files (regions, data, errors...) give the same processes as the filtered read."""
    processes = parse_events(recorded("commands-all-events"))
    assert [(process.argv[:2], process.exit_status, process.depth) for process in processes] == [
        (("git", "status"), 0, 0),
        (("git", "rev-parse"), 1, 0),
        (("git", "ls-remote"), 128, 0),
        (("/usr/lib/git-core/git", "remote-https"), 128, 1),
        (
            ("/usr/lib/git-core/git-remote-https", "https://agent:s3cret-token@127.0.0.1:53189/app.git"),
            128,
            2,
        ),
    ]


def test_a_process_without_an_exit():
    """SIGTERM leaves only the start event (as does a process still running); SIGPIPE is traced."""
    killed, piped = parse_events(recorded("unfinished"))
    assert (killed.argv, killed.exit_status, killed.duration_s, killed.signal) == (
        ("git", "cat-file", "--batch"),
        None,
        None,
        None,
    )
    assert (piped.argv, piped.exit_status, piped.duration_s, piped.signal) == (
        ("git", "log", "-p"),
        None,
        0.001673,
        13,
    )


def test_lines_that_are_not_events_are_skipped():
    text = recorded("push-local")
    lines = text.splitlines()
    push_start = next(index for index, line in enumerate(lines) if '"argv":["git","push"' in line)
    lines[push_start] = lines[push_start][:100]  # as if git were still writing it
    lines += ["garbage", "[1, 2]", '{"event":"start","sid":"x","argv":"git"}']
    processes = parse_events("\n".join(lines))
    assert len(processes) == len(parse_events(text)) - 1  # the push lost its start: no entry
    assert all(process.depth > 0 for process in processes)


def test_judge_read():
    text = recorded("unfinished")
    assert judge_read("agent-1", Result("x", 0, text, "")).processes == tuple(parse_events(text))
    assert judge_read("agent-1", Result("x", 0, "", "")).processes == ()
    missing = judge_read("agent-1", Result("x", NO_TRACE_DIR, "", ""))
    assert missing.processes == () and missing.problem is not None
    assert missing.problem.startswith(f"no git trace directory {TRACE_DIR}")
    partly = judge_read("agent-1", Result("x", 1, text, "grep: /var/log/x/y: Permission denied\n"))
    assert len(partly.processes) == 2
    assert partly.problem == "some git traces could not be read: grep: /var/log/x/y: Permission denied"


def git_traced(directory: Path, cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_TRACE2_EVENT": str(directory), "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def read(directory: Path) -> Result:
    done = subprocess.run(
        ["sh", "-c", read_command(str(directory))], capture_output=True, text=True, timeout=30
    )
    return Result("read", done.returncode, done.stdout, done.stderr)


def test_the_read_command_over_what_real_git_writes(tmp_path):
    traces = tmp_path / "git-trace2"
    traces.mkdir(mode=0o1777)
    git_traced(traces, tmp_path, "init", "-q", "repo")
    git_traced(traces, tmp_path / "repo", "status", "--short")
    (traces / "partial").write_text('{"event":"start","sid":"cut short')  # no newline: git still writing
    result = read(traces)
    assert result.ok, result.stderr
    commands = [process.argv for process in parse_events(result.stdout)]
    assert commands == [("git", "init", "-q", "repo"), ("git", "status", "--short")]


def test_the_read_command_without_a_directory_or_traces(tmp_path):
    assert read(tmp_path / "missing").exit_status == NO_TRACE_DIR
    assert read(tmp_path) == Result("read", 0, "", "")  # grep finds nothing: not a failure


def test_the_read_command_skips_fifos(tmp_path):
    """A FIFO in the 1777 directory (anyone can make one) would block a plain read forever."""
    traces = tmp_path / "traces"
    traces.mkdir()
    git_traced(traces, tmp_path, "version")
    os.mkfifo(traces / "trap")
    assert [process.argv for process in parse_events(read(traces).stdout)] == [("git", "version")]


def test_the_read_command_reports_an_unreadable_file():
    """Run as an unprivileged user (root reads everything), in a directory it may enter."""
    with tempfile.TemporaryDirectory(dir="/tmp") as temporary:
        root = Path(temporary)
        root.chmod(0o755)
        traces = root / "traces"
        traces.mkdir()
        traces.chmod(0o1777)
        git_traced(traces, root, "version")
        (traces / "private").write_text('{"event":"start"}\n')
        (traces / "private").chmod(0o600)
        argv = ["sh", "-c", read_command(str(traces))]
        if os.geteuid() == 0:
            argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    trace = judge_read("agent-1", Result("read", done.returncode, done.stdout, done.stderr))
    assert [process.argv for process in trace.processes] == [("git", "version")]
    assert trace.problem is not None and "Permission denied" in trace.problem
