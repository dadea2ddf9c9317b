"""The push guard cloud-init installs (components/pushguard.py): the rendered /etc/gitconfig and hooks,
run by the real git against real repositories, refuse pushes to the base and to other agents'
branches, let the agent push its own and other branches, and keep the repository's own hooks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from components.cloudinit import render_cloud_config
from components.pushguard import HOOKS_DIR, repository_hooks
from components.spec import load_fleet
from tests.unit.git_reader import git_config
from tests.unit.git_repos import ENV, clone, commit, git, remote_with_main
from tests.unit.test_cloudinit import keys

AGENTS = [{"name": name, "identity": {"name": name, "email": f"{name}@example.com"}} for name in ("alpha", "beta")]


def document(**fleet) -> dict[str, dict]:
    spec = load_fleet("test", {"agents": fleet.pop("agents", AGENTS), **fleet}, {}.get)
    text = render_cloud_config(spec.agents[0], keys(), None, spec)
    return {entry["path"]: entry for entry in yaml.safe_load(text)["write_files"]}


def install(files: dict[str, dict], root: Path) -> dict[str, str]:
    """The document's /etc/gitconfig and hooks under root; the environment git then runs them with."""
    hooks = root / "hooks"
    hooks.mkdir()
    for path, entry in files.items():
        if path.startswith(HOOKS_DIR + "/"):
            hook = hooks / path.rsplit("/", 1)[1]
            hook.write_text(entry["content"])
            hook.chmod(0o755)
    system = root / "gitconfig"
    system.write_text(files["/etc/gitconfig"]["content"].replace(HOOKS_DIR, str(hooks)))
    env = {key: value for key, value in ENV.items() if key != "GIT_CONFIG_NOSYSTEM"}
    return {**env, "GIT_CONFIG_SYSTEM": str(system)}


def push(where: Path, env: dict[str, str], *refspecs: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(where), "push", "origin", *refspecs], env=env, capture_output=True,
                          text=True)


@pytest.fixture
def agent(tmp_path: Path) -> tuple[Path, Path]:
    remote = remote_with_main(tmp_path, {"README": "hello\n"})
    work = clone(remote, tmp_path / "alpha", "agent/alpha")
    commit(work, {"NOTES": "alpha\n"}, "alpha's work")
    return remote, work


def test_the_system_gitconfig_names_the_hooks_the_agent_and_what_it_may_not_push_to():
    files = document(agents=[*AGENTS, {**AGENTS[1], "name": "gamma", "branch": "feature/gamma"}],
                     base={"branch": "develop"})
    config = git_config(files["/etc/gitconfig"]["content"])
    assert config["core.hookspath"] == HOOKS_DIR and config["trace2.eventtarget"] == "/var/log/agentfleet/git-trace2"
    assert (config["agentfleet.agent"], config["agentfleet.branch"], config["agentfleet.base"]) == (
        "alpha", "agent/alpha", "develop")
    assert all(files[f"{HOOKS_DIR}/{name}"]["owner"] == "root:root" for name in ("pre-push", *repository_hooks()))
    assert files["/etc/gitconfig"]["owner"] == "root:root"


def test_only_branches_named_otherwise_change_other_agents_documents():
    """Agents with default branches (agent/<name>) are covered by one pattern: a fleet that grows
    leaves the first agent's document as it was (no in-place update of every agent)."""
    before = document()["/etc/gitconfig"]["content"]
    grown = [*AGENTS, {**AGENTS[1], "name": "delta"}]
    assert document(agents=grown)["/etc/gitconfig"]["content"] == before
    custom = [*AGENTS, {**AGENTS[1], "name": "delta", "branch": "work/delta"}]
    assert "work/delta" in document(agents=custom)["/etc/gitconfig"]["content"]


def test_the_agent_pushes_its_own_branch_and_new_ones(tmp_path: Path, agent):
    remote, work = agent
    env = install(document(), tmp_path)
    done = push(work, env, "HEAD:agent/alpha", "HEAD:refs/heads/fix/typo", "HEAD:refs/tags/v1")
    assert done.returncode == 0, done.stderr
    assert git(remote, "rev-parse", "agent/alpha", "fix/typo") == "\n".join([git(work, "rev-parse", "HEAD")] * 2)


@pytest.mark.parametrize(("refspec", "why"), [
    ("HEAD:main", "main (the base branch)"),
    ("HEAD:agent/beta", "agent/beta (another agent's branch)"),
    (":agent/beta", "agent/beta (another agent's branch)"),  # deleting it
    ("HEAD:refs/heads/agent/beta/side", "agent/beta/side (another agent's branch)"),
])
def test_a_push_to_the_base_or_another_agents_branch_is_refused(tmp_path: Path, agent, refspec: str, why: str):
    remote, work = agent
    git(work, "push", "-q", "origin", "HEAD:agent/beta")  # without the guard: beta's branch exists
    commit(work, {"NOTES": "more\n"}, "more of alpha's work")
    before = git(remote, "for-each-ref")
    env = install(document(), tmp_path)
    done = push(work, env, "HEAD:agent/alpha", refspec)
    assert done.returncode != 0
    assert f"agentfleet: alpha may not push to {why}; push to its own branch agent/alpha" in done.stderr
    assert git(remote, "for-each-ref") == before  # nothing of the push landed, its own branch neither


def test_the_fleets_base_and_other_agents_branches_named_otherwise_are_guarded(tmp_path: Path, agent):
    remote, work = agent
    agents = [*AGENTS, {**AGENTS[1], "name": "gamma", "branch": "feature/gamma"}]
    env = install(document(agents=agents, base="develop"), tmp_path)
    assert "develop (the base branch)" in push(work, env, "HEAD:develop").stderr
    assert "feature/gamma (another agent's branch)" in push(work, env, "HEAD:feature/gamma").stderr
    assert push(work, env, "HEAD:main").returncode == 0  # not the base of this fleet


def test_the_base_is_the_remotes_default_branch_as_the_clone_recorded_it(tmp_path: Path, agent):
    remote, work = agent
    git(work, "push", "-q", "origin", "HEAD:trunk")
    git(work, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/trunk")
    commit(work, {"NOTES": "more\n"}, "more of alpha's work")
    env = install(document(), tmp_path)
    assert "trunk (the base branch)" in push(work, env, "HEAD:trunk").stderr


def test_the_repositorys_own_hooks_still_run(tmp_path: Path, agent):
    remote, work = agent
    env = install(document(), tmp_path)
    hooks = work / ".git" / "hooks"
    (hooks / "pre-commit").write_text("#!/bin/sh\necho own pre-commit >&2\nexit 3\n")
    (hooks / "pre-push").write_text("#!/bin/sh\necho \"own pre-push $1: $(cat)\" >&2\n")
    for hook in ("pre-commit", "pre-push"):
        (hooks / hook).chmod(0o755)
    committed = subprocess.run(["git", "-C", str(work), "commit", "-q", "--allow-empty", "-m", "x"], env=env,
                               capture_output=True, text=True)
    assert committed.returncode != 0 and "own pre-commit" in committed.stderr
    pushed = push(work, env, "HEAD:agent/alpha")
    line = f"HEAD {git(work, 'rev-parse', 'HEAD')} refs/heads/agent/alpha {'0' * 40}"
    assert pushed.returncode == 0 and f"own pre-push origin: {line}\n" in pushed.stderr  # the same stdin
