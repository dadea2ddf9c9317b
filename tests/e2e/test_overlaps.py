"""`agentfleet status` and `agentfleet overlaps` on a real Docker fleet of three agents cloned from
the git server: alpha and beta rewrite the same line of README and commit, gamma commits a new
file and leaves a change uncommitted. overlaps names alpha and beta and README as a conflict,
gamma as clean, and exits 1; status agrees with what git says inside each agent. The guard rails
cloud-init installed: git in an agent refuses a push to another agent's branch or to the base,
and `agentfleet exec` warns when an agent's base lags the remote by more than the fleet allows."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentfleet.cli import main as cli
from components.keys import generate_ed25519
from tests.e2e.support import FleetStack, GitServer

AGENTS = ("alpha", "beta", "gamma")
WORK = {
    "alpha": "printf 'alpha was here\\n' > README && git commit -qam alpha",
    "beta": "printf 'beta was here\\n' > README && git commit -qam beta",
    "gamma": "printf 'gamma\\n' > NOTES && git add NOTES && git commit -qm gamma && printf 'more\\n' >> NOTES",
}


def working_fleet(git_server: GitServer, stack: FleetStack, path: Path, work: dict[str, str],
                  **fleet: object) -> Path:
    """The stack's agents cloned from the git server, each after its command in `work` ran;
    returns the outputs file."""
    private, public = generate_ed25519(f"{stack.name}-deploy-key")
    git_server.authorize(public)
    stack.set_secret("deployKey", private)
    stack.set_fleet({
        "attach_networks": [git_server.network],
        "defaults": {"resources": {"cpus": 0.5, "memory": "256m", "pids": 128}},
        "agents": [
            {"name": name, "identity": {"name": name.title(), "email": f"{name}@fleet.test"},
             "remote": git_server.url, "known_hosts": [git_server.known_hosts_line],
             "credential": {"ssh_key": "deployKey"}}
            for name in work
        ],
        **fleet,
    })
    path.write_text(json.dumps(stack.up()))
    for name, command in work.items():
        assert run_cli(path, "exec", name, "--", command)[0] == 0
    return path


@pytest.fixture(scope="module")
def outputs(git_server: GitServer, make_stack, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("overlaps") / "outputs.json"
    return working_fleet(git_server, make_stack("overlaps"), path, WORK, base={"branch": "main", "warn_behind": 0})


def run_cli(outputs: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = cli(["--outputs", str(outputs), *argv], out, err, {})
    return status, out.getvalue(), err.getvalue()


def in_agent(outputs: Path, name: str, command: str) -> str:
    """What git says inside the agent."""
    status, out, err = run_cli(outputs, "exec", name, "--", command)
    assert status == 0, err
    return out.strip()


def test_overlaps_names_the_conflicting_pair_and_file_and_gamma_as_clean(outputs: Path):
    before = {name: in_agent(outputs, name, "git rev-parse HEAD; git status --porcelain") for name in AGENTS}

    status, out, err = run_cli(outputs, "overlaps", "--json")

    assert (status, err) == (1, "")
    found = json.loads(out)
    assert found["conflict"] is True and found["base"] == "main" and found["unread"] == []
    assert found["base_commit"] == in_agent(outputs, "alpha", "git rev-parse origin/main")
    assert found["files"] == [{"path": "README", "agents": ["alpha", "beta"]}]
    pairs = {tuple(pair["agents"]): pair for pair in found["pairs"]}
    assert pairs["alpha", "beta"] == {"agents": ["alpha", "beta"], "shared": ["README"], "clean": False,
                                      "conflicts": ["README"]}
    assert [pairs[pair]["clean"] for pair in (("alpha", "gamma"), ("beta", "gamma"))] == [True, True]
    agents = {agent["name"]: agent for agent in found["agents"]}
    assert agents["gamma"]["paths"] == ["NOTES"] and agents["gamma"]["merges_into_base"] is True
    assert all(agent["merges_into_base"] for agent in agents.values())
    # gamma's uncommitted line is part of its work commit, which is not its HEAD and not pushed
    assert agents["gamma"]["commit"] != before["gamma"].split()[0]
    assert agents["alpha"]["commit"] == before["alpha"].split()[0]
    after = {name: in_agent(outputs, name, "git rev-parse HEAD; git status --porcelain") for name in AGENTS}
    assert after == before

    status, out, err = run_cli(outputs, "overlaps")
    assert status == 1 and "alpha + beta  README" in out and out.endswith("1 conflict predicted\n")


def merge_gammas_work(outputs: Path, git_server: GitServer) -> None:
    """gamma pushes its own branch and the forge merges it into main (a fast-forward): alpha and
    beta are then one behind main, gamma even with it."""
    in_agent(outputs, "gamma", "git push -q origin HEAD")
    git_server.git("update-ref", "refs/heads/main", "refs/heads/agent/gamma")


def test_status_matches_what_git_says_in_each_agent(outputs: Path, git_server: GitServer):
    merge_gammas_work(outputs, git_server)
    worked = datetime.now(UTC)
    time.sleep(1.1)  # trace files' times are to the second at worst: the status's own git comes later

    status, out, err = run_cli(outputs, "status", "--json")

    assert (status, err) == (0, "")
    records = {record["name"]: record for record in json.loads(out)}
    assert list(records) == list(AGENTS)
    for name, record in records.items():
        behind, ahead = in_agent(outputs, name, "git rev-list --left-right --count origin/main...HEAD").split()
        assert record["reachable"] is True and record["error"] is None and record["backend"] == "docker"
        assert record["branch"] == in_agent(outputs, name, "git symbolic-ref --short HEAD")
        assert record["head"] == in_agent(outputs, name, "git rev-parse HEAD")
        assert (record["base"], record["base_commit"]) == ("main", in_agent(outputs, name, "git rev-parse origin/main"))
        assert (record["behind"], record["ahead"]) == (int(behind), int(ahead))
        changed = in_agent(outputs, name, "git status --porcelain")
        assert record["uncommitted"] == len(changed.splitlines())
        committed = datetime.fromisoformat(in_agent(outputs, name, "git log -1 --format=%cI"))
        assert datetime.fromisoformat(record["last_commit"]) == committed
        activity = datetime.fromisoformat(record["last_git_activity"])
        assert committed - timedelta(seconds=1) <= activity <= worked + timedelta(seconds=1)
    assert [(records[name]["behind"], records[name]["ahead"]) for name in AGENTS] == [(1, 1), (1, 1), (0, 0)]
    assert records["gamma"]["uncommitted"] == 1


def test_the_agents_git_refuses_a_push_to_another_agents_branch_or_the_base(outputs: Path, git_server: GitServer):
    before = git_server.git("for-each-ref", "refs/heads")
    for target, why in (("agent/beta", "another agent's branch"), ("main", "the base branch")):
        # --force: git's own refusal of a push that is no fast-forward comes before the hook's
        status, out, err = run_cli(outputs, "exec", "alpha", "--", f"git push --force origin HEAD:{target}")
        assert status == 1
        assert f"agentfleet: alpha may not push to {target} ({why}); push to its own branch agent/alpha\n" in err
    assert git_server.git("for-each-ref", "refs/heads") == before
    status, _, err = run_cli(outputs, "exec", "alpha", "--", "git push -q origin HEAD")
    assert status == 0, err
    assert git_server.git("rev-parse", "agent/alpha") == in_agent(outputs, "alpha", "git rev-parse HEAD")


def test_exec_warns_when_the_base_lags_more_than_the_fleet_allows(outputs: Path, git_server: GitServer):
    merge_gammas_work(outputs, git_server)
    status, out, err = run_cli(outputs, "exec", "beta", "--", "git rev-parse --abbrev-ref HEAD")
    assert (status, out) == (0, "agent/beta\n")
    assert err == ("agentfleet: beta is 1 commit behind main on the remote (the fleet allows 0); "
                   "rebase or merge origin/main\n")
    assert run_cli(outputs, "exec", "gamma", "--", "true") == (0, "", "")  # even with main


def test_the_repositorys_own_hooks_still_run_under_the_fleets_hooks_path(outputs: Path):
    """The agent image links every common hook to repository-hook (images/repository-hooks): a
    repository's own pre-commit hook runs and can refuse a commit."""
    hook = ".git/hooks/pre-commit"
    script = f"printf '#!/bin/sh\\necho own pre-commit hook refuses >&2\\nexit 1\\n' >{hook} && chmod +x {hook}"
    assert run_cli(outputs, "exec", "gamma", "--", script)[0] == 0
    status, _, err = run_cli(outputs, "exec", "gamma", "--", "git commit -q --allow-empty -m refused")
    assert status == 1 and "own pre-commit hook refuses" in err
    assert run_cli(outputs, "exec", "gamma", "--", f"rm {hook}")[0] == 0
