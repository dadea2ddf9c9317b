"""A fleet's shared objects (`shared_objects`): validation, the cloud-config's reference, and the
resource graph under Pulumi mocks (one mirror, mounted read-only by the agents on its remote)."""

from __future__ import annotations

import json

import pulumi
import pytest
import yaml

from components.cloudinit import SHARED_OBJECTS, AgentKeys, render_cloud_config
from components.keys import generate_ed25519
from components.spec import load_fleet
from tests.unit.fleet_mocks import FleetMocks, mocks_for_module
from tests.unit.git_reader import git_config
from tests.unit.spec_helpers import agent, load, problems

REMOTE = "git@github.com:org/app.git"
KEY, _ = generate_ed25519("deploy")
MOCKS = FleetMocks()




def test_off_by_default():
    assert load({"agents": [agent("a", remote=REMOTE)]}).shared_objects is None


def test_true_borrows_the_first_given_key_on_the_remote():
    fleet = load({"shared_objects": True, "agents": [
        agent("a", remote=REMOTE), agent("b", remote=REMOTE, credential={"ssh_key": "k"})]}, {"k": KEY})
    shared = fleet.shared_objects
    assert shared is not None and shared.remote.url == REMOTE
    assert (shared.credential.kind, shared.credential.secret) == ("ssh_key", KEY)
    assert [fleet.shares_objects(a) for a in fleet.agents] == [True, True]


def test_an_explicit_credential_serves_agents_with_generated_keys():
    fleet = load({"shared_objects": {"credential": {"ssh_key": "k"}},
                  "agents": [agent("a", remote=REMOTE), agent("b")]}, {"k": KEY})
    assert fleet.shared_objects is not None and fleet.shared_objects.credential.config_key == "k"
    assert [fleet.shares_objects(a) for a in fleet.agents] == [True, False]


def test_a_public_https_remote_needs_no_credential():
    fleet = load({"shared_objects": True, "agents": [agent("a", remote="https://example.com/org/app.git")]})
    assert fleet.shared_objects is not None and fleet.shared_objects.credential.kind == "none"


@pytest.mark.parametrize(("raw", "secrets", "expected"), [
    ({"shared_objects": "yes", "agents": [agent("a", remote=REMOTE)]}, {},
     'stack "test", field "shared_objects": use true, or `{credential:'),
    ({"shared_objects": True, "agents": [agent("a")]}, {},
     'field "shared_objects": no Docker agent has a `remote`'),
    ({"shared_objects": True, "agents": [agent("a", remote=REMOTE), agent("b", remote="git@github.com:org/other.git")]}, {},
     'field "shared_objects": mirrors one repository, but the agents use 2'),
    ({"shared_objects": True, "agents": [agent("a", remote=REMOTE)]}, {},
     'field "shared_objects": no credential can read git@github.com:org/app.git at `pulumi up`'),
    ({"shared_objects": {"credential": {"ssh_key": "missing"}}, "agents": [agent("a", remote=REMOTE)]}, {},
     'stack "test", field "shared_objects.credential.ssh_key": config key missing is not set'),
    ({"shared_objects": {"credential": "generate"}, "agents": [agent("a", remote=REMOTE)]}, {},
     'field "shared_objects.credential": must be a key or token that can read the remote now'),
    ({"shared_objects": {"credentials": {}}, "agents": [agent("a", remote=REMOTE)]}, {},
     'field "shared_objects": use true, or'),
])
def test_mistakes_are_named(raw, secrets, expected):
    found = problems(raw, secrets)
    assert any(expected in problem for problem in found), found


def test_the_first_clone_is_told_where_the_shared_objects_are():
    spec = load({"agents": [agent("a", remote=REMOTE, credential={"ssh_key": "k"})]}, {"k": KEY}).agents[0]
    host_private, host_public = generate_ed25519("host")
    keys = AgentKeys("ssh-ed25519 AAAA operator", host_private, host_public, remote_private_key=KEY)

    def gitconfig(reference):
        document = yaml.safe_load(render_cloud_config(spec, keys, reference))
        return next(f["content"] for f in document["write_files"] if f["path"].endswith("/.gitconfig"))

    assert git_config(gitconfig(SHARED_OBJECTS))["agentfleet.reference"] == SHARED_OBJECTS
    assert "agentfleet.reference" not in git_config(gitconfig(None))


@pytest.fixture(scope="module", autouse=True)
def shared_objects_mocks():
    """These mocks for this module only; whatever mocks were set before come back afterwards."""
    yield from mocks_for_module(MOCKS, "shared")


@pulumi.runtime.test
def test_one_mirror_mounted_read_only_by_the_agents_on_its_remote():
    from components.fleet import Fleet, FleetArgs

    spec = load_fleet("shared", {"shared_objects": True, "agents": [
        agent("agent-1", remote=REMOTE, credential={"ssh_key": "k"}, ssh_port=23001, retain_workspace=True),
        agent("agent-2", ssh_port=23002)]}, {"k": KEY}.get)
    fleet = Fleet("fleet", FleetArgs(spec))

    def check(_):
        mirror = MOCKS.resources["fleet-shared-objects"].inputs
        assert mirror["name"] == "agentfleet-shared-shared-objects" and mirror["remote"] == REMOTE
        plain = json.dumps({k: v for k, v in mirror.items() if k != "secret"})
        assert KEY not in plain, "the deploy key must be the secret input, in no plain field"
        assert mirror["secret"]["value"] == KEY
        sharing, other = (MOCKS.resources[f"{a}-container"].inputs for a in ("agent-1", "agent-2"))
        assert (sharing["shared_objects_volume"], sharing["shared_objects_mount"]) == (
            "agentfleet-shared-shared-objects", SHARED_OBJECTS)
        assert "shared_objects_volume" not in other

    return fleet.agents.apply(check)
