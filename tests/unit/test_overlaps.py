"""`overlaps`: the in-agent work script against real local clones, the packs merged in a scratch
repository by git merge-tree, and the pairwise logic alone with a stand-in merge."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentfleet.errors import LocalGitFailed
from agentfleet.merges import Merge, ScratchRepository
from agentfleet.overlaps import Overlaps, current_base, predict
from agentfleet.result import Result
from agentfleet.status import AgentStatus
from agentfleet.work import AgentWork, decode_history, history_script, parse_work, work_script
from tests.unit.git_repos import clone, commit, git, remote_with_main, run_script

LINES = "".join(f"line {n}\n" for n in range(1, 11))


def read_work(agent: Path) -> AgentWork:
    work = parse_work(agent.name, "docker", run_script(work_script(), agent))
    assert isinstance(work, AgentWork), work
    return work


def overlaps_of(agents: list[Path]) -> Overlaps:
    """What Fleet.overlaps does, with sh in place of SSH."""
    works = [read_work(agent) for agent in agents]
    with ScratchRepository() as scratch:
        scratch.add_pack(decode_history(run_script(history_script(works[0].base_commit), agents[0])))
        for work in works:
            scratch.add_pack(work.pack)
        return predict(works, [], scratch.merge)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return remote_with_main(tmp_path, {"shared.txt": LINES, "other.txt": LINES, "third.txt": LINES})


def test_same_lines_conflict_other_files_merge_and_uncommitted_work_counts(tmp_path: Path, remote: Path):
    one = clone(remote, tmp_path / "one", branch="agent/one")
    two = clone(remote, tmp_path / "two", branch="agent/two")
    three = clone(remote, tmp_path / "three", branch="agent/three")
    commit(one, {"shared.txt": LINES.replace("line 5", "one's line 5")}, "one")
    (two / "shared.txt").write_text(LINES.replace("line 5", "two's line 5"))  # not committed
    commit(three, {"other.txt": LINES + "three\n"}, "three")
    (three / "new.txt").write_text("untracked work counts too\n")
    heads = {agent: git(agent, "rev-parse", "HEAD") for agent in (one, two, three)}
    index = (two / ".git" / "index").read_bytes()

    found = overlaps_of([one, two, three])

    assert (found.base, found.base_commit) == ("main", git(remote, "rev-parse", "main"))
    assert [(file.path, file.agents) for file in found.files] == [("shared.txt", ("one", "two"))]
    pairs = {pair.agents: pair for pair in found.pairs}
    assert set(pairs) == {("one", "two"), ("one", "three"), ("two", "three")}
    assert (pairs["one", "two"].clean, pairs["one", "two"].conflicts) == (False, ("shared.txt",))
    assert pairs["one", "two"].shared == ("shared.txt",)
    assert pairs["one", "three"].clean and pairs["two", "three"].clean and not pairs["one", "three"].shared
    assert {agent.name: agent.paths for agent in found.agents} == {
        "one": ("shared.txt",), "two": ("shared.txt",), "three": ("new.txt", "other.txt")}
    assert found.conflict_predicted and not found.stale
    # The agents' branches, HEADs and indexes are as they were; nothing new is referenced.
    assert {agent: git(agent, "rev-parse", "HEAD") for agent in (one, two, three)} == heads
    assert (two / ".git" / "index").read_bytes() == index
    assert git(two, "status", "--porcelain") == "M shared.txt"
    assert git(remote, "for-each-ref", "--format=%(refname)") == "refs/heads/main"


def test_work_that_no_longer_merges_into_the_moved_base_is_stale(tmp_path: Path, remote: Path):
    one = clone(remote, tmp_path / "one", branch="agent/one")
    two = clone(remote, tmp_path / "two", branch="agent/two")
    commit(one, {"shared.txt": LINES.replace("line 2", "one's line 2")}, "one")
    commit(two, {"third.txt": "rewritten\n"}, "two")
    mover = clone(remote, tmp_path / "mover")
    commit(mover, {"shared.txt": LINES.replace("line 2", "main's line 2")}, "main moves")
    git(mover, "push", "-q", "origin", "HEAD:main")

    found = overlaps_of([one, two])

    assert found.base_commit == git(remote, "rev-parse", "main")  # each agent fetched the base first
    assert [(agent.name, agent.merges_into_base, agent.base_conflicts) for agent in found.agents] == [
        ("one", False, ("shared.txt",)), ("two", True, ())]
    assert not found.conflicts and found.conflict_predicted
    assert found.to_json()["agents"][0]["base_conflicts"] == ["shared.txt"]


def test_an_agent_without_changes_sends_an_empty_pack_and_changes_nothing(tmp_path: Path, remote: Path):
    idle = clone(remote, tmp_path / "idle", branch="agent/idle")
    found = overlaps_of([idle])
    assert found.agents[0].paths == () and found.agents[0].commit == git(idle, "rev-parse", "HEAD")
    assert not found.conflict_predicted and found.pairs == ()


def test_no_base_or_no_commit_is_the_agents_error():
    result = Result("…", 0, "branch main\nbase main\nfetch_error fatal: no origin\n"
                    "work_error no base commit to compare with\n", "")
    read = parse_work("a", "docker", result)
    assert isinstance(read, AgentStatus) and read.error == "no base commit to compare with"
    garbled = Result("…", 0, "base main\nbase_commit abc\nwork def\npack %%%\npaths\nx\0", "")
    assert parse_work("a", "docker", garbled).error == "its work arrived garbled (not base64)"


def test_a_merge_git_cannot_do_is_an_error_naming_git(tmp_path: Path):
    with ScratchRepository() as scratch, pytest.raises(LocalGitFailed, match="merge-tree"):
        scratch.merge("0" * 40, "1" * 40)
    path = Path(scratch.path)
    assert not path.exists()


def work(name: str, paths: set[str], base_commit: str = "b1") -> AgentWork:
    return AgentWork(name, f"c-{name}", "main", base_commit, frozenset(paths), b"")


def test_pairs_files_and_base_from_a_stand_in_merge():
    conflicting = {frozenset({"c-a", "c-b"}): ("x.py",), frozenset({"b1", "c-c"}): ("y.py",)}

    def merge(one: str, other: str) -> Merge:
        conflicts = conflicting.get(frozenset({one, other}), ())
        return Merge(not conflicts, conflicts)

    works = [work("a", {"x.py", "y.py"}), work("b", {"x.py"}), work("c", {"y.py", "z.py"}),
             work("d", {"z.py"}, base_commit="b0")]
    down = AgentStatus("e", "lima", False, "cannot reach")
    found = predict(works, [down], merge)

    assert found.base_commit == "b1" and current_base(works[3:]) == "b0"
    assert [(file.path, file.agents) for file in found.files] == [
        ("x.py", ("a", "b")), ("y.py", ("a", "c")), ("z.py", ("c", "d"))]
    assert len(found.pairs) == 6
    assert [pair.agents for pair in found.conflicts] == [("a", "b")]
    assert [agent.name for agent in found.stale] == ["c"]
    assert found.to_json()["unread"] == [{"name": "e", "error": "cannot reach"}]
    assert predict([], [down], merge).conflict_predicted is False


def test_the_text_names_shared_files_conflicting_pairs_and_stale_work():
    from agentfleet.render import render_overlaps

    def merge(one: str, other: str) -> Merge:
        return Merge(False, ("x.py",)) if {one, other} == {"c-a", "c-b"} else Merge(True)

    text = render_overlaps(predict([work("a", {"x.py"}), work("b", {"x.py"}), work("c", {"z.py"})], [], merge))
    lines = text.splitlines()
    assert lines[0] == "base main (b1), 3 agents"
    assert ["x.py", "a,", "b"] in [line.split() for line in lines]
    assert ["a", "+", "b", "x.py", "CONFLICT:", "x.py"] in [line.split() for line in lines]
    assert not any("c" in line.split() for line in lines[1:])  # pairs with nothing shared and clean: left out
    assert lines[-1] == "1 conflict predicted"
    assert render_overlaps(predict([work("c", {"z.py"})], [], merge)).splitlines()[-1] == "no conflicts predicted"
