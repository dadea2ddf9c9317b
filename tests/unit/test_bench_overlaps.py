"""bench/overlaps.py's pure parts: the agents' edits, the answer they must give, the script that
makes them (run here in a real git repository), the CLI's answer and the aim, as the report shows it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.footprint import file_names
from bench.overlaps import (
    WAYS,
    aims,
    answer_of_overlaps,
    edit_script,
    expected,
    plan,
    subset_outputs,
)
from bench.report import write_reports


def test_every_pair_shares_a_file_and_every_other_pair_conflicts():
    edits = plan(20, 5000)
    agents = [f"a-{n}" for n in range(1, 21)]
    files, conflicts = expected(edits, agents)
    names = file_names(5000)
    assert files == set(names[:10])  # one shared file per pair, nothing else touched twice
    assert conflicts == {frozenset((f"a-{n}", f"a-{n + 1}")) for n in (1, 5, 9, 13, 17)}
    assert all(len(agent_edits) == 4 for agent_edits in edits.values())


def test_a_smaller_fleet_is_judged_by_its_own_agents_only():
    edits = plan(20, 1000)
    files, conflicts = expected(edits, ["a-1", "a-2", "a-3", "a-4", "a-5"])
    assert files == set(file_names(1000)[:2])  # a-5's partner is not in this fleet
    assert conflicts == {frozenset(("a-1", "a-2"))}


def test_a_repository_too_small_for_the_fleet_is_refused_naming_both():
    with pytest.raises(ValueError, match="20 agents need 70 files, the repository has 50"):
        plan(20, 50)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def test_the_edit_script_commits_each_edit_on_its_line(tmp_path: Path):
    edits = plan(2, 20)["a-2"]
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    for edit in edits:
        (repo / edit.path).parent.mkdir(parents=True, exist_ok=True)
        (repo / edit.path).write_text("".join(f"line {n}\n" for n in range(1, 61)))
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    subprocess.run(["sh", "-c", edit_script("a-2", edits)], cwd=repo, check=True,
                   env={"PATH": "/usr/bin:/bin", "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@a",
                        "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@a", "HOME": str(tmp_path)})
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "log", "-1", "--format=%s") == "work of a-2\n"
    for edit in edits:
        lines = (repo / edit.path).read_text().splitlines()
        assert lines[edit.line - 1] == "edited by a-2" and len(lines) == 60


def test_the_clis_answer_is_its_files_and_its_unclean_pairs():
    report = {"files": [{"path": "x", "agents": ["a-1", "a-2"]}],
              "pairs": [{"agents": ["a-1", "a-2"], "clean": False}, {"agents": ["a-1", "a-3"], "clean": True}]}
    assert answer_of_overlaps(report) == ({"x"}, {frozenset(("a-1", "a-2"))})


def test_a_smaller_fleets_outputs_keep_only_its_agents_and_their_keys():
    outputs = {"fleet": "f", "agents": {"a-1": {"port": 1}, "a-2": {"port": 2}},
               "agent_private_keys": {"a-1": "k1", "a-2": "k2"}}
    assert subset_outputs(outputs, ["a-2"]) == {"fleet": "f", "agents": {"a-2": {"port": 2}},
                                                "agent_private_keys": {"a-2": "k2"}}


def test_the_aim_is_the_largest_fleet_on_the_largest_repository_with_its_command(tmp_path: Path):
    rows = [{"files": files, "agents": agents, "way": way, "median_s": seconds}
            for files in (1000, 5000) for agents in (5, 20)
            for way, seconds in zip(WAYS, (agents * files / 10000, agents * files / 20000))]
    (found,) = aims(rows, [5, 20], [1000, 5000], 500, 3)
    assert found["measured"] == "2.00x" and found["limit"] == "≤ 1.5x" and not found["met"]
    assert found["detail"] == "10.00 s / 5.00 s, median of 3"
    assert found["command"] == ("python -m bench --only overlaps --overlaps-agents 5,20 --overlaps-files 1000,5000 "
                                "--overlaps-commits 500 --overlaps-rounds 3")
    write_reports([{"benchmark": "overlaps", "results": rows, "aims": [found]}], tmp_path)
    assert "`agentfleet overlaps`, 20 agents, 5000 files" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
