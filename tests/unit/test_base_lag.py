"""`agentfleet exec` warns of a stale base: the lag script against real repositories (when it
fetches, what it counts), and the warning through the real CLI over the local sshd, in-process
and through the background connection."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from agentfleet.baselag import BaseLag, lag_script, parse_lag
from tests.unit.git_repos import clone, commit, git, remote_with_main, run_script
from tests.unit.test_cli_background import agentfleet, stack  # noqa: F401 (a fixture)
from tests.unit.test_cli_local_sshd import run_cli, with_agent_changed

WARNING = "agentfleet: agent-1 is 3 commits behind main on the remote (the fleet allows 2); rebase or merge origin/main\n"


def moved_on(tmp_path: Path, commits: int) -> tuple[Path, Path]:
    """A remote and an agent's clone of it, then main moves on by `commits` commits."""
    remote = remote_with_main(tmp_path, {"README": "one\n"})
    agent = clone(remote, tmp_path / "agent", branch="agent/agent-1")
    other = clone(remote, tmp_path / "other")
    for number in range(commits):
        commit(other, {"README": f"{number}\n"}, f"main moves on {number}")
    git(other, "push", "-q", "origin", "HEAD:main")
    return remote, agent


def lag(agent: Path, allowed: int = 2, base: str | None = None) -> BaseLag | None:
    done = run_script(lag_script(base), agent)
    assert done.ok, done.stderr
    return parse_lag("agent-1", allowed, done.stdout)


def test_it_fetches_the_base_and_counts_what_head_lacks(tmp_path: Path):
    _, agent = moved_on(tmp_path, 3)
    assert lag(agent) == BaseLag("agent-1", "main", 3, 2)
    assert lag(agent).warning() == WARNING
    assert lag(agent, allowed=3) is None  # not more than the fleet allows


def test_a_recent_fetch_is_trusted_and_an_old_one_renewed(tmp_path: Path):
    remote, agent = moved_on(tmp_path, 0)
    git(agent, "fetch", "-q")  # FETCH_HEAD: fetched just now
    other = clone(remote, tmp_path / "later")
    for number in range(3):
        commit(other, {"README": f"later {number}\n"}, "later")
    git(other, "push", "-q", "origin", "HEAD:main")
    assert lag(agent) is None  # no network: the fetch of a moment ago stands
    old = time.time() - 3600
    os.utime(agent / ".git" / "FETCH_HEAD", (old, old))
    assert lag(agent) == BaseLag("agent-1", "main", 3, 2)


def test_the_fleets_base_is_the_one_counted(tmp_path: Path):
    remote, agent = moved_on(tmp_path, 0)
    other = clone(remote, tmp_path / "releaser")
    for number in range(4):
        commit(other, {"R": f"{number}\n"}, "release")
    git(other, "push", "-q", "origin", "HEAD:release")
    assert lag(agent, base="release") == BaseLag("agent-1", "release", 4, 2)


def test_no_commit_no_word(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    assert run_script(lag_script(None), empty).stdout == "" and lag(empty) is None


def test_exec_warns_after_the_commands_own_output(tmp_path: Path, local_sshd):
    _, agent = moved_on(tmp_path, 3)
    stale = with_agent_changed(tmp_path, local_sshd, "agent-1", workspace=str(agent), warn_behind=2)
    status, out, err = run_cli("--outputs", stale, "exec", "agent-1", "--", "echo done; echo said >&2; exit 4")
    assert (status, out, err) == (4, "done\n", "said\n" + WARNING)
    assert run_cli("--outputs", stale, "exec", "--all", "--", "true") == (0, "", WARNING + "2 ok, 0 failed\n")
    fine = with_agent_changed(tmp_path, local_sshd, "agent-1", workspace=str(agent), warn_behind=3)
    assert run_cli("--outputs", fine, "exec", "agent-1", "--", "true") == (0, "", "")


def test_the_background_connection_warns_too(tmp_path: Path, local_sshd, stack):  # noqa: F811
    _, agent = moved_on(tmp_path, 3)
    raw = local_sshd.outputs()
    raw["agents"]["agent-1"].update(workspace=str(agent), warn_behind=2)
    (tmp_path / "outputs.json").write_text(json.dumps(raw))
    assert stack.cli("exec", "agent-1", "--", "true")[0] == 0  # in-process; starts the master
    stack.wait_for_master()
    done = agentfleet(stack, "exec", "agent-1", "--", "echo hi")
    assert (done.returncode, done.stdout) == (0, "hi\n")
    assert done.stderr.endswith(WARNING) and "paramiko" not in done.stderr
