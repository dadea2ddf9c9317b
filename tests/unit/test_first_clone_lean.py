"""images/agent-files/first-clone with `clone:`: the real script and real git against a file:// remote
(which serves shallow and partial clones as a forge does): the agent's git config asks, the
workspace is as shallow or as partial as asked, and the agent's own branch is the one on the remote."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional

import pytest

from tests.unit.git_repos import ENV, clone, commit, git, remote_with_main

SCRIPT = Path(__file__).resolve().parents[2] / "images" / "agent-files" / "first-clone"
BRANCH = "agent/agent-1"


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """main with five commits, each a new version of one file, and the agent's own branch on the
    remote already (three commits of main plus one of its own): a replaced agent's first clone
    must continue it."""
    bare = remote_with_main(tmp_path, {"notes": "0\n"})
    seed = tmp_path / "seed"
    for number in range(1, 5):
        commit(seed, {"notes": f"{number}\n"}, f"main {number}")
    git(seed, "push", "-q", "origin", "HEAD:main")
    git(seed, "checkout", "-q", "-b", BRANCH, "HEAD~2")
    commit(seed, {"own": "work\n"}, "own work")
    git(seed, "push", "-q", "origin", BRANCH)
    git(bare, "config", "uploadpack.allowFilter", "true")  # as forges do
    return bare


def first_clone(tmp_path: Path, remote: Path, reference: Optional[Path] = None, **clone: str) -> Path:
    """Run the first-boot script with an agent's git config as cloud-init writes it."""
    home = tmp_path / "home"
    home.mkdir()
    workspace = home / "workspace"
    settings = {"remote": f"file://{remote}", "branch": BRANCH, "workspace": str(workspace), **clone}
    if reference is not None:
        settings["reference"] = str(reference)
    for key, value in settings.items():
        git(tmp_path, "config", "--file", str(home / ".gitconfig"), f"agentfleet.{key}", value)
    done = subprocess.run(["sh", str(SCRIPT)], env={**ENV, "HOME": str(home)}, capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (0, "")
    return workspace


def missing_objects(workspace: Path) -> list[str]:
    listed = git(workspace, "rev-list", "--objects", "--all", "--missing=print")
    return [line for line in listed.splitlines() if line.startswith("?")]


def test_without_clone_the_clone_is_full(tmp_path, remote):
    workspace = first_clone(tmp_path, remote)
    assert git(workspace, "rev-parse", "--is-shallow-repository") == "false"
    assert git(workspace, "config", "--default", "-", "remote.origin.partialclonefilter") == "-"
    assert git(workspace, "rev-list", "--count", "origin/main") == "5"


def test_depth_cuts_every_branch_and_the_agent_continues_its_own(tmp_path, remote):
    workspace = first_clone(tmp_path, remote, depth="2")
    assert git(workspace, "rev-parse", "--is-shallow-repository") == "true"
    assert git(workspace, "rev-list", "--count", "origin/main") == "2"
    # Not --single-branch: the agent's branch is fetched too, and checked out where the remote has it.
    assert git(workspace, "branch", "--show-current") == BRANCH
    assert git(workspace, "rev-parse", "HEAD") == git(remote, "rev-parse", BRANCH)
    assert git(workspace, "config", "--get-all", "remote.origin.fetch") == "+refs/heads/*:refs/remotes/origin/*"


def test_a_blobless_clone_leaves_old_contents_on_the_remote(tmp_path, remote):
    workspace = first_clone(tmp_path, remote, filter="blob:none")
    assert git(workspace, "config", "remote.origin.partialclonefilter") == "blob:none"
    assert git(workspace, "rev-parse", "--is-shallow-repository") == "false"
    # Of the five versions of `notes`, those of main's tip and of the agent's branch were checked
    # out; the other three stay on the remote until needed.
    assert len(missing_objects(workspace)) == 3
    assert git(workspace, "show", "origin/main~4:notes") == "0"  # fetched on demand
    assert (workspace / "own").read_text() == "work\n"


def test_both_with_the_shared_mirror_borrow_its_objects(tmp_path, remote):
    mirror = tmp_path / "shared.git"
    subprocess.run(["git", "clone", "-q", "--mirror", str(remote), str(mirror)], env=ENV, check=True)
    pushed = clone(remote, tmp_path / "later")
    git(pushed, "checkout", "-q", BRANCH)
    commit(pushed, {"later": "after the mirror\n"}, "after the mirror")
    git(pushed, "push", "-q", "origin", BRANCH)
    workspace = first_clone(tmp_path, remote, reference=mirror, depth="1", filter="blob:none")
    assert (workspace / ".git" / "objects" / "info" / "alternates").read_text().strip() == str(mirror / "objects")
    assert git(workspace, "rev-parse", "--is-shallow-repository") == "true"
    assert git(workspace, "config", "remote.origin.partialclonefilter") == "blob:none"
    assert (workspace / "later").read_text() == "after the mirror\n"  # fetched beyond the mirror
