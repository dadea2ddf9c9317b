"""Lean clones, end to end: real Docker agents whose first clone at boot is shallow (`clone:
{depth: 3}`), partial (`clone: {filter: blob:none}`), or both while borrowing the fleet's shared
objects, against the e2e git server over SSH; each still commits and pushes its branch with
`agentfleet exec`, and a later change of `clone` updates the agent in place without touching its
workspace.

The repository has ten commits, each a new version of one file: a full clone would hold ten
commits and ten versions. Like a forge, the server serves partial clones (uploadpack.allowFilter,
and, as this sshd speaks git's protocol v0, uploadpack.allowAnySHA1InWant for the objects a
partial clone fetches later).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from agentfleet.cli import main as cli
from components.cloudinit import SHARED_OBJECTS
from components.keys import generate_ed25519
from tests.e2e.support import FleetStack, GitServer, docker

REPOSITORY = "/srv/git/lean.git"
HISTORY = f"""set -e
git init -q --bare -b main {REPOSITORY}
git -C {REPOSITORY} config uploadpack.allowFilter true
git -C {REPOSITORY} config uploadpack.allowAnySHA1InWant true
cd "$(mktemp -d)" && git init -q -b main . && git config user.name Seed && git config user.email seed@example.com
for i in $(seq 1 10); do
    echo "version $i" > notes.txt && git add . && git commit -q -m "commit $i"
done
git push -q {REPOSITORY} main
"""
CLONES = {"shallow": {"depth": 3}, "partial": {"filter": "blob:none"}}


@pytest.fixture(scope="module")
def deploy_key(git_server: GitServer) -> str:
    """The lean repository on the server, and a key that may read and push it."""
    docker("exec", "-u", "git", git_server.name, "sh", "-c", HISTORY)
    private, public = generate_ed25519("lean-clones-deploy-key")
    git_server.authorize(public)
    return private


def up(stack: FleetStack, git_server: GitServer, key: str, agents: dict[str, dict], where: Path, **fleet) -> Path:
    """Agents with these `clone`s on the lean repository; returns the outputs file."""
    stack.set_secret("deployKey", key)
    remote = git_server.url.replace("/srv/git/app.git", REPOSITORY)
    stack.set_fleet({
        "attach_networks": [git_server.network], **fleet,
        "defaults": {"remote": remote, "known_hosts": [git_server.known_hosts_line],
                     "credential": {"ssh_key": "deployKey"}, "resources": {"memory": "256m"}},
        "agents": [{"name": name, "identity": {"name": name.title(), "email": f"{name}@fleet.test"}, "clone": clone}
                   for name, clone in agents.items()],
    })
    outputs = where / "outputs.json"
    outputs.write_text(json.dumps(stack.up()))
    return outputs


@pytest.fixture(scope="module")
def lean(git_server: GitServer, deploy_key: str, make_stack, tmp_path_factory):
    stack: FleetStack = make_stack("lean")
    return stack, up(stack, git_server, deploy_key, CLONES, tmp_path_factory.mktemp("lean"))


def run_ok(outputs: Path, agent: str, command: str) -> str:
    """`agentfleet exec AGENT -- COMMAND`, as an operator runs it."""
    out, err = io.StringIO(), io.StringIO()
    status = cli(["--outputs", str(outputs), "exec", agent, "--", command], out, err, {})
    assert status == 0, f"{agent}: `{command}` exited {status}: {err.getvalue()}"
    return out.getvalue().strip()


def server_git(git_server: GitServer, *args: str) -> str:
    return docker("exec", "-u", "git", git_server.name, "git", "-C", REPOSITORY, *args)


def test_the_shallow_clone_holds_the_depth_asked(lean):
    _, outputs = lean
    assert run_ok(outputs, "shallow", "git rev-parse --is-shallow-repository") == "true"
    assert run_ok(outputs, "shallow", "git rev-list --count HEAD") == "3"
    assert run_ok(outputs, "shallow", "git config --default full remote.origin.partialclonefilter") == "full"


def test_the_partial_clone_leaves_old_contents_on_the_server(lean):
    _, outputs = lean
    assert run_ok(outputs, "partial", "git config remote.origin.partialclonefilter") == "blob:none"
    assert run_ok(outputs, "partial", "git rev-parse --is-shallow-repository") == "false"
    assert run_ok(outputs, "partial", "git rev-list --count HEAD") == "10"
    # Nine of the ten versions of notes.txt were never checked out, so never fetched.
    missing = run_ok(outputs, "partial", "git rev-list --objects --all --missing=print | grep -c '^?'")
    assert missing == "9"
    # Fetched when needed, through the agent's own egress policy and key.
    assert run_ok(outputs, "partial", "git show HEAD~9:notes.txt") == "version 1"


@pytest.mark.parametrize("agent", sorted(CLONES))
def test_the_agent_commits_and_pushes_its_branch(lean, git_server: GitServer, agent):
    _, outputs = lean
    assert run_ok(outputs, agent, "git branch --show-current") == f"agent/{agent}"
    run_ok(outputs, agent, f"echo {agent} > {agent}.txt && git add {agent}.txt && "
                           f"git commit -q -m 'work of {agent}' && git push -q origin HEAD")
    commit = run_ok(outputs, agent, "git rev-parse HEAD")
    assert server_git(git_server, "rev-parse", f"refs/heads/agent/{agent}") == commit
    assert server_git(git_server, "log", "-1", "--format=%ae %s", commit) == f"{agent}@fleet.test work of {agent}"
    assert server_git(git_server, "rev-list", "--count", commit) == "11"  # on top of the whole history


def test_a_changed_clone_updates_the_agent_in_place_and_keeps_its_workspace(lean):
    """`clone` shapes a first clone only: changing it replaces nothing and re-clones nothing."""
    stack, outputs = lean
    container = f"agentfleet-{stack.name}-shallow"
    before = docker("inspect", "-f", "{{.Id}}", container)
    head = run_ok(outputs, "shallow", "git rev-parse HEAD")
    depth = run_ok(outputs, "shallow", "git rev-list --count HEAD")
    fleet = stack.fleet()
    fleet["agents"][0]["clone"] = {"depth": 1}
    stack.set_fleet(fleet)
    preview = stack.stack.preview(on_output=lambda _: None)
    assert not {"replace", "create-replacement", "delete-replaced"} & set(preview.change_summary), preview.change_summary
    stack.up()
    assert docker("inspect", "-f", "{{.Id}}", container) == before
    assert run_ok(outputs, "shallow", "git config --global agentfleet.depth") == "1"
    assert run_ok(outputs, "shallow", "git rev-parse HEAD") == head
    assert run_ok(outputs, "shallow", "git rev-list --count HEAD") == depth
    assert run_ok(outputs, "shallow", "git rev-parse --is-shallow-repository") == "true"


def test_a_lean_clone_borrows_the_shared_objects_and_pushes(git_server: GitServer, deploy_key: str, make_stack,
                                                           tmp_path):
    """With `shared_objects`, the mirror holds the history: the clone borrows it and fetches only
    what the mirror lacks, still as shallow and as partial as asked."""
    stack: FleetStack = make_stack("lean-shared")
    outputs = up(stack, git_server, deploy_key, {"borrower": {"depth": 1, "filter": "blob:none"}}, tmp_path,
                 shared_objects=True)
    assert run_ok(outputs, "borrower", "cat .git/objects/info/alternates") == f"{SHARED_OBJECTS}/objects"
    assert run_ok(outputs, "borrower", "git rev-parse --is-shallow-repository") == "true"
    assert run_ok(outputs, "borrower", "git rev-list --count HEAD") == "1"
    assert run_ok(outputs, "borrower", "git config remote.origin.partialclonefilter") == "blob:none"
    run_ok(outputs, "borrower", "echo mine > borrower.txt && git add borrower.txt && "
                                "git commit -q -m 'work of borrower' && git push -q origin HEAD")
    commit = run_ok(outputs, "borrower", "git rev-parse HEAD")
    assert server_git(git_server, "rev-parse", "refs/heads/agent/borrower") == commit
