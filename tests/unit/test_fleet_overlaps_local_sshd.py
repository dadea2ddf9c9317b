"""Fleet.status() and Fleet.overlaps() through the real client and the throwaway local sshd:
each agent's workspace is a clone of its own in a temp dir (the outputs say where), so the
scripts, the packs over the SSH channel and the scratch repository all run for real."""

from __future__ import annotations

import copy
from pathlib import Path

from agentfleet import Fleet
from tests.unit.git_repos import clone, commit, git, remote_with_main
from tests.unit.test_cli_local_sshd import closed_port_changes


def fleet_on(local_sshd, workspaces: dict[str, Path], closed: str | None = None) -> Fleet:
    """The local sshd's fleet with these workspaces; the agent `closed` listens nowhere."""
    raw = copy.deepcopy(local_sshd.outputs())
    for name, workspace in workspaces.items():
        raw["agents"][name]["workspace"] = str(workspace)
    if closed:
        raw["agents"][closed].update(closed_port_changes(local_sshd))
    return Fleet.from_outputs(raw, "local", connect_timeout=3.0)


def test_overlaps_and_status_through_ssh(tmp_path: Path, local_sshd):
    remote = remote_with_main(tmp_path, {"app.py": "a = 1\nb = 2\n"})
    one = clone(remote, tmp_path / "one", branch="agent/agent-1")
    two = clone(remote, tmp_path / "two", branch="agent/agent-2")
    head = commit(one, {"app.py": "a = 10\nb = 2\n"}, "one")
    (two / "app.py").write_text("a = 20\nb = 2\n")

    with fleet_on(local_sshd, {"agent-1": one, "agent-2": two}) as fleet:
        found = fleet.overlaps()
        statuses = {status.name: status for status in fleet.status()}

    assert found.unread == () and found.base_commit == git(remote, "rev-parse", "main")
    [pair] = found.pairs
    assert (pair.agents, pair.clean, pair.conflicts) == (("agent-1", "agent-2"), False, ("app.py",))
    assert [(file.path, file.agents) for file in found.files] == [("app.py", ("agent-1", "agent-2"))]
    assert (statuses["agent-1"].head, statuses["agent-1"].ahead, statuses["agent-1"].uncommitted) == (head, 1, 0)
    assert (statuses["agent-2"].ahead, statuses["agent-2"].uncommitted) == (0, 1)
    assert git(two, "status", "--porcelain") == "M app.py"  # still uncommitted, index untouched


def test_an_unreachable_agent_is_left_out_by_name(tmp_path: Path, local_sshd):
    remote = remote_with_main(tmp_path, {"app.py": "a = 1\n"})
    one = clone(remote, tmp_path / "one", branch="agent/agent-1")
    commit(one, {"other.py": "x\n"}, "one")

    with fleet_on(local_sshd, {"agent-1": one}, closed="agent-2") as fleet:
        found = fleet.overlaps()
        down = fleet.status()[1]

    assert [agent.name for agent in found.agents] == ["agent-1"] and not found.conflict_predicted
    assert [status.name for status in found.unread] == ["agent-2"]
    assert "connection refused" in (found.unread[0].error or "")
    assert (down.name, down.reachable, down.head) == ("agent-2", False, None)
