"""`agentfleet status`'s script and parser: run against real local repositories, and parsed from
recorded outputs of the cases a live agent rarely shows (no repository, a failed script)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from agentfleet.errors import Unreachable
from agentfleet.result import Result
from agentfleet.status import NO_REPOSITORY, parse_status, status_script, unreachable_status
from tests.unit.git_repos import clone, commit, git, remote_with_main, run_script


def scan(where: Path, trace: Path) -> Result:
    return run_script(status_script(trace_dir=str(trace)), where)


def test_ahead_behind_uncommitted_and_activity_match_git(tmp_path: Path):
    remote = remote_with_main(tmp_path, {"README": "one\n"})
    agent = clone(remote, tmp_path / "agent", branch="agent/a")
    commit(agent, {"a.txt": "a\n"}, "first")
    head = commit(agent, {"b.txt": "b\n"}, "second")
    other = clone(remote, tmp_path / "other")
    commit(other, {"README": "two\n"}, "moves main on")
    git(other, "push", "-q", "origin", "HEAD:main")
    (agent / "README").write_text("changed\n")
    (agent / "new.txt").write_text("untracked\n")
    trace = tmp_path / "trace"
    trace.mkdir()
    (trace / "older").write_text("")
    (trace / "newest").write_text("")
    os.utime(trace / "older", (1_700_000_000, 1_700_000_000))
    os.utime(trace / "newest", (1_800_000_000.5, 1_800_000_000.5))
    index = (agent / ".git" / "index").read_bytes()

    status = parse_status("a", "docker", scan(agent, trace))

    assert status.error is None and status.reachable
    assert (status.branch, status.head, status.base) == ("agent/a", head, "main")
    assert status.base_commit == git(remote, "rev-parse", "main")  # fetched: main moved after the clone
    assert (status.ahead, status.behind, status.uncommitted) == (2, 1, 2)
    assert status.last_commit == datetime.fromisoformat(git(agent, "log", "-1", "--format=%cI"))
    assert status.last_git_activity == datetime.fromtimestamp(1_800_000_000.5, UTC)
    assert status.fetch_error is None
    assert (agent / ".git" / "index").read_bytes() == index  # the agent's index is left alone
    assert git(agent, "symbolic-ref", "--short", "HEAD") == "agent/a"


def test_without_a_remote_the_fetch_error_is_kept_and_counts_are_unknown(tmp_path: Path):
    agent = tmp_path / "agent"
    agent.mkdir()
    git(agent, "init", "-q", "-b", "work")
    head = commit(agent, {"x": "x\n"}, "only")

    status = parse_status("a", "docker", scan(agent, tmp_path / "no-trace"))

    assert (status.error, status.branch, status.head, status.base) == (None, "work", head, "main")
    assert "origin" in (status.fetch_error or "")
    assert (status.ahead, status.behind, status.uncommitted, status.last_git_activity) == (None, None, 0, None)


def test_an_empty_workspace_is_an_error_not_an_exception(tmp_path: Path):
    result = scan(tmp_path, tmp_path)
    assert result.exit_status == NO_REPOSITORY
    status = parse_status("a", "lima", result)
    assert status.reachable and "agentfleet clone" in (status.error or "")
    assert status.head is None


def test_recorded_output_of_a_failed_script():
    result = Result("…", 1, "activity 1800000000.0\nbranch main\n", "error: object file is empty\n")
    status = parse_status("a", "docker", result)
    assert status.error == "the status script failed: error: object file is empty"
    assert status.branch is None and status.last_git_activity == datetime.fromtimestamp(1_800_000_000, UTC)


def test_json_is_flat_with_utc_times_and_nulls():
    error = Unreachable("a", "127.0.0.1:2222", "connection refused")
    record = unreachable_status("a", "docker", error).to_json()
    assert record["reachable"] is False and "connection refused" in record["error"]
    assert record["head"] is None and record["last_commit"] is None
    result = Result("…", 0, "committed 2026-12-06T09:00:00+01:00\nbehind_ahead 3\t0\n", "")
    record = parse_status("a", "docker", result).to_json()
    assert (record["last_commit"], record["behind"], record["ahead"]) == ("2026-12-06T08:00:00Z", 3, 0)


def test_the_table_aligns_like_ls_and_names_each_problem():
    from agentfleet.render import render_status_table, status_problems

    good = parse_status("agent-1", "docker", Result("…", 0, "branch agent/agent-1\nhead 0123456789abcdef\n"
                        "base main\nbehind_ahead 0\t2\nuncommitted 1\ncommitted 2026-12-06T08:00:00Z\n"
                        "fetch_error fatal: unable to access remote\n", ""))
    down = unreachable_status("agent-22", "lima", Unreachable("agent-22", "h:1", "no answer within 3 s"))
    lines = render_status_table([good, down]).splitlines()
    assert lines[0].split()[:9] == ["NAME", "BACKEND", "HEALTH", "BRANCH", "HEAD", "BASE", "AHEAD", "BEHIND", "CHANGED"]
    assert lines[1].split() == ["agent-1", "docker", "ok", "agent/agent-1", "0123456789", "main", "2", "0", "1",
                                "2026-12-06", "08:00", "-"]
    assert lines[2].split() == ["agent-22", "lima", "unreachable", *["-"] * 8]
    assert lines[1].index("docker") == lines[2].index("lima") == lines[0].index("BACKEND")
    problems = status_problems([good, down])
    assert problems[0].startswith("agent-22: agent-22: cannot reach h:1")
    assert problems[1] == ("agent-1: cannot fetch main, ahead/behind count against what it fetched last: "
                           "fatal: unable to access remote")


def test_the_fleets_base_wins_over_the_remotes_default_branch(tmp_path: Path):
    remote = remote_with_main(tmp_path, {"README": "one\n"})
    seed = clone(remote, tmp_path / "releaser")
    release = commit(seed, {"release.txt": "r\n"}, "release work")
    git(seed, "push", "-q", "origin", "HEAD:release")
    agent = clone(remote, tmp_path / "agent", branch="agent/a")  # on main, release one ahead of it

    status = parse_status("a", "docker", run_script(status_script("release", str(tmp_path / "t")), agent))

    assert (status.base, status.base_commit, status.behind, status.ahead) == ("release", release, 1, 0)
