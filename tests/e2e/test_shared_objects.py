"""Shared objects, end to end: a fleet with `shared_objects: true` makes one read-only mirror of
its remote; each agent's first clone borrows the mirror's objects (git alternates), so its own
.git/objects stays small, and each agent still commits and pushes on its own.
"""

from __future__ import annotations

import pytest

from agentfleet import Fleet
from components.cloudinit import SHARED_OBJECTS
from components.keys import generate_ed25519
from tests.e2e.support import FleetStack, GitServer, docker, docker_objects

REPOSITORY = "/srv/git/shared.git"
# About 3 MB of history that does not compress: 60 commits of 50 KB random text each.
HISTORY = f"""set -e
git init -q --bare -b main {REPOSITORY}
cd "$(mktemp -d)" && git init -q -b main . && git config user.name Seed && git config user.email seed@example.com
for i in $(seq 1 60); do
    head -c 38000 /dev/urandom | base64 > "file-$((i % 7)).txt"
    git add . && git commit -q -m "commit $i"
done
git push -q {REPOSITORY} main
"""


def kib(text: str) -> int:
    return int(text.split()[0])


@pytest.fixture(scope="module")
def fleet(git_server: GitServer, make_stack):
    docker("exec", "-u", "git", git_server.name, "sh", "-c", HISTORY)
    private, public = generate_ed25519("shared-objects-deploy-key")
    git_server.authorize(public)
    stack: FleetStack = make_stack("shared")
    stack.set_secret("deployKey", private)
    remote = git_server.url.replace("/srv/git/app.git", REPOSITORY)
    stack.set_fleet({
        "attach_networks": [git_server.network],
        "shared_objects": True,
        "defaults": {"remote": remote, "known_hosts": [git_server.known_hosts_line],
                     "credential": {"ssh_key": "deployKey"}, "resources": {"memory": "256m"}},
        "agents": [{"name": f"agent-{i}", "identity": {"name": f"Agent {i}", "email": f"agent-{i}@fleet.test"}}
                   for i in (1, 2)],
    })
    outputs = stack.up()
    with Fleet.from_outputs(outputs, stack.name) as client:
        yield stack, client


def run_ok(client: Fleet, agent: str, command: str) -> str:
    result = client.agent(agent).run(command, timeout=60)
    assert result.ok, f"{agent}: `{command}` exited {result.exit_status}: {result.stderr}"
    return result.stdout.strip()


def test_one_mirror_volume_for_the_stack(fleet):
    stack, _ = fleet
    volumes = docker_objects("volume", f"agentfleet.stack={stack.name}")
    assert f"agentfleet-{stack.name}-shared-objects" in volumes
    containers = docker_objects("container", f"agentfleet.stack={stack.name}")
    assert not [name for name in containers if name.endswith("-clone")], "the container that cloned the mirror is gone"


@pytest.mark.parametrize("agent", ["agent-1", "agent-2"])
def test_the_clone_borrows_the_mirrors_objects(fleet, agent):
    _, client = fleet
    assert run_ok(client, agent, "cat .git/objects/info/alternates") == f"{SHARED_OBJECTS}/objects"
    assert run_ok(client, agent, "git rev-list --count HEAD") == "60"
    mirror = kib(run_ok(client, agent, f"du -sk {SHARED_OBJECTS}/objects"))
    own = kib(run_ok(client, agent, "du -sk .git/objects"))
    assert mirror > 2000 and own < mirror / 10, f"{agent}: own objects {own} KiB vs mirror {mirror} KiB"
    run_ok(client, agent, "git fsck --connectivity-only --no-progress")


def test_the_mirror_is_read_only_for_the_agent(fleet):
    _, client = fleet
    result = client.agent("agent-1").run(f"touch {SHARED_OBJECTS}/objects/x", timeout=30)
    assert not result.ok


def test_agents_commit_and_push_independently(fleet, git_server: GitServer):
    _, client = fleet
    for agent in ("agent-1", "agent-2"):
        assert run_ok(client, agent, "git rev-parse --abbrev-ref HEAD") == f"agent/{agent}"
        run_ok(client, agent, f"echo {agent} > {agent}.txt && git add . && "
                              f"git commit -q -m 'work of {agent}' && git push -q origin HEAD")
    refs = docker("exec", "-u", "git", git_server.name, "git", "-C", REPOSITORY, "for-each-ref",
                  "--format=%(refname:short) %(authoremail)", "refs/heads")
    authors = dict(line.split(" ", 1) for line in refs.splitlines())
    assert authors["agent/agent-1"] == "<agent-1@fleet.test>"
    assert authors["agent/agent-2"] == "<agent-2@fleet.test>"
