"""The warm pool without Docker: its config, which agents may claim, the member's document and
shape, and the claim's atomicity against an engine whose renames race."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import yaml
from docker.errors import NotFound

from components.backends import MachineContext
from components.backends.docker.backend import container_fields, member_template
from components.backends.docker.pool import (
    MEMBER_LABEL,
    POOL_LABEL,
    SHAPE_LABEL,
    as_claimed,
    claim,
    claimable,
    member_fields,
    pool_hint,
    shape,
)
from components.cloudinit import FIRST_CLONE, pool_document
from components.keys import generate_ed25519
from components.spec import FleetConfigError, load_fleet

IDENTITY = {"name": "A", "email": "a@example.com"}


def fleet(pool, **agent):
    return load_fleet("s", {"pool": pool, "agents": [{"name": "a", "identity": IDENTITY, **agent}]}, {}.get)


def test_pool_size_is_read():
    assert fleet({"size": 3}).pool_size == 3
    assert load_fleet("s", {"agents": [{"name": "a", "identity": IDENTITY}]}, {}.get).pool_size == 0


@pytest.mark.parametrize("pool, field, says", [
    ({"size": -1}, "pool.size", "not a pool size"),
    ({"size": "2"}, "pool.size", "not a pool size"),
    ({"size": True}, "pool.size", "not a pool size"),
    ({"size": 201}, "pool.size", "from 0 to 200"),
    ({"sise": 2}, "pool.sise", 'did you mean "size"'),
    (4, "pool", "use `pool: {size: 4}`"),
])
def test_a_bad_pool_names_stack_and_field(pool, field, says):
    with pytest.raises(FleetConfigError) as raised:
        fleet(pool)
    assert f'stack "s", field "{field}"' in str(raised.value) and says in str(raised.value)


@pytest.mark.parametrize("agent, may", [
    ({}, True),
    ({"ssh_port": 23001}, False),
    ({"bind_address": "0.0.0.0"}, False),
    ({"packages": ["jq"]}, False),
    ({"retain_workspace": True}, False),
])
def test_which_agents_may_claim(agent, may):
    spec = fleet({"size": 1}, **agent)
    assert claimable(spec, spec.agents[0]) is may
    assert not claimable(fleet(None, **agent), fleet(None, **agent).agents[0])


def test_members_have_the_shape_of_the_agents_that_claim_them_but_no_identity():
    spec = fleet({"size": 2}, remote="git@github.com:org/app.git")
    context = MachineContext("s", (), frozenset(), spec)
    agent = container_fields(context, spec.agents[0])
    template = member_template(context, list(spec.agents), spec.hosts[0])
    assert shape(template) == shape(agent) == pool_hint(spec, context, spec.agents[0], agent)["pool"]["shape"]
    assert "forge_gate" not in template and "name" not in template and template["labels"] == {"agentfleet.stack": "s"}
    assert template["egress"]["destinations"] == [] != agent["egress"]["destinations"]  # closed: not even its remote
    other = container_fields(context, load_fleet("s", {"agents": [{"name": "a", "identity": IDENTITY,
                                                                  "resources": {"memory": "2g"}}]}, {}.get).agents[0])
    assert shape(other) != shape(agent)
    member = member_fields({**template, "engine": {}}, "agentfleet-s-pool", "agentfleet-s-pool.0a1b2c3d", "ssh-ed25519 X")
    assert member["labels"] == {"agentfleet.stack": "s", POOL_LABEL: "agentfleet-s-pool", SHAPE_LABEL: shape(template),
                                MEMBER_LABEL: "agentfleet-s-pool.0a1b2c3d"}
    assert member["hostname"] == "pool-0a1b2c3d" and member["workspace_volume"] == "agentfleet-s-pool.0a1b2c3d-workspace"


def test_a_member_boots_with_a_throwaway_host_key_no_login_and_no_clone():
    private, public = generate_ed25519("member")
    document = yaml.safe_load(pool_document(private, public))
    assert document["users"][0]["ssh_authorized_keys"] == []
    assert document["ssh_keys"]["ed25519_public"] == public
    assert "write_files" not in document and "packages" not in document
    assert not any(FIRST_CLONE in step for step in document["runcmd"])


def test_a_claimed_container_reads_as_its_agent_where_its_creation_fixed_otherwise():
    fields = {"name": "agentfleet-s-a", "hostname": "a", "labels": {"agentfleet.stack": "s", "agentfleet.agent": "a"}}
    read = {"hostname": "pool-0a1b2c3d", "labels": {"agentfleet.stack": "s"}, "image": "x"}
    claimed = as_claimed({MEMBER_LABEL: "agentfleet-s-pool.0a1b2c3d"}, fields, read)
    assert claimed == {"hostname": "a", "labels": fields["labels"], "image": "x"}
    assert as_claimed({"agentfleet.agent": "a"}, fields, read) == read  # booted fresh: read as it is


class RacingEngine:
    """Renames as the engine does them: the old name is looked up, then (after a moment in which
    another rename may look it up too) the container takes the new name."""

    def __init__(self, names: list[str]) -> None:
        self.names = {name: name for name in names}  # current name -> member
        self.guard = threading.Lock()
        self.api = SimpleNamespace(rename=self.rename)
        self.containers = SimpleNamespace(list=self.list, get=self.get)

    def rename(self, old: str, new: str) -> None:
        with self.guard:
            if old not in self.names and not old.endswith("-policy"):
                raise NotFound("gone")
        time.sleep(0.01)
        with self.guard:
            member = self.names.pop(old, None) or old
            self.names[new] = member

    def list(self, all=False, filters=None):
        with self.guard:
            return [SimpleNamespace(name=n, labels={POOL_LABEL: "p", MEMBER_LABEL: n}, attrs={})
                    for n in self.names if n.startswith("p.")]

    def get(self, name):
        return SimpleNamespace(attrs={})


def test_two_agents_of_one_up_never_claim_the_same_member(monkeypatch):
    monkeypatch.setattr("components.backends.docker.pool._policed", lambda docker, container: True)
    engine = RacingEngine([f"p.{i}" for i in range(3)])
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda agent: claim(engine, {"name": "p", "shape": "x"}, agent, lock),
                            ["a1", "a2", "a3", "a4"]))
    assert sorted(v for v in got if v) == ["p.0-workspace", "p.1-workspace", "p.2-workspace"]
    assert got.count(None) == 1
