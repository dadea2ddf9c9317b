"""components/spec: `clone: {depth, filter}` for an agent or as a default, each mistake named with
stack, agent and field and what would be right."""

import pytest

from components.spec.model import CloneSpec
from tests.unit.spec_helpers import agent, load, problems

REMOTE = "https://git.example.com/acme/app.git"


def test_no_clone_is_a_full_clone():
    (spec,) = load({"agents": [agent(remote=REMOTE)]}).agents
    assert spec.clone == CloneSpec(depth=None, filter=None)


def test_depth_and_filter_together_or_alone():
    fleet = load({"agents": [
        agent("a", remote=REMOTE, clone={"depth": 1, "filter": "blob:none"}),
        agent("b", remote=REMOTE, clone={"filter": "blob:limit=1m"}),
        agent("c", remote=REMOTE, clone={"depth": 50}),
    ]})
    assert [spec.clone for spec in fleet.agents] == [
        CloneSpec(1, "blob:none"), CloneSpec(None, "blob:limit=1m"), CloneSpec(50, None)]


def test_an_agents_clone_replaces_the_default_as_a_whole():
    fleet = load({
        "defaults": {"remote": REMOTE, "clone": {"depth": 1, "filter": "blob:none"}},
        "agents": [agent("a"), agent("b", clone={"depth": 10}), agent("c", clone={})],
    })
    assert [spec.clone for spec in fleet.agents] == [CloneSpec(1, "blob:none"), CloneSpec(10, None), CloneSpec()]


def test_a_default_clone_passes_over_agents_without_a_remote():
    fleet = load({"defaults": {"clone": {"depth": 1}}, "agents": [agent("a", remote=REMOTE), agent("b")]})
    assert [spec.remote is None for spec in fleet.agents] == [False, True]


@pytest.mark.parametrize(("clone", "expected"), [
    ({"depth": 0}, 'field "clone.depth": 0 is not a number of commits; use an integer of at least 1'),
    ({"depth": "1"}, 'field "clone.depth": \'1\' is not a number of commits'),
    ({"depth": True}, 'field "clone.depth": True is not a number of commits'),
    ({"filter": "tree:0"}, 'field "clone.filter": \'tree:0\' is not a filter a workspace works with; use blob:none'),
    ({"filter": "blob:none\n"}, 'field "clone.filter": \'blob:none\\n\' is not a filter'),
    ({"filter": "blob:limit=lots"}, "such as blob:limit=1m"),
    ({"dept": 1}, 'field "clone.dept": unknown field; did you mean "depth"?'),
    (1, 'field "clone": 1 is not a mapping; use e.g. `clone: {depth: 1}`'),
    ("shallow", 'field "clone": \'shallow\' is not a mapping'),
])
def test_mistakes_name_stack_agent_and_field(clone, expected):
    found = problems({"agents": [agent(remote=REMOTE, clone=clone)]})
    assert any(problem.startswith('stack "test", agent "agent-1", ') and expected in problem for problem in found), found


def test_a_default_clone_is_checked_for_each_agent():
    found = problems({"defaults": {"clone": {"depth": -1}}, "agents": [agent("a", remote=REMOTE)]})
    assert any('agent "a", field "clone.depth": -1 is not a number of commits' in problem for problem in found), found


def test_clone_on_an_agent_without_a_remote_is_refused():
    found = problems({"agents": [agent(clone={"depth": 1})]})
    assert found == ['stack "test", agent "agent-1", field "clone": shapes the first clone of a remote, and this agent '
                     'has no `remote` (it starts an empty repository); add a remote or remove clone']


def test_shared_objects_and_a_lean_clone_go_together():
    fleet = load({"shared_objects": True, "agents": [agent(remote=REMOTE, clone={"depth": 1, "filter": "blob:none"})]})
    (spec,) = fleet.agents
    assert fleet.shares_objects(spec) and spec.clone == CloneSpec(1, "blob:none")
