"""The fleet's `base`: the branch agents' work merges into and how far it may lag, checked with the rest."""

import pytest

from components.spec import BaseSpec, FleetConfigError, load_fleet

AGENT = {"name": "agent-1", "identity": {"name": "Agent One", "email": "a1@example.com"}}


def base(raw):
    return load_fleet("dev", {"agents": [AGENT], **({} if raw is None else {"base": raw})}, {}.get).base


def test_by_default_the_base_is_the_remotes_default_branch_and_20_commits_of_lag_pass():
    assert base(None) == BaseSpec(None, 20)


@pytest.mark.parametrize(("raw", "expected"), [
    ("develop", BaseSpec("develop", 20)),
    ({"branch": "release/2.x", "warn_behind": 0}, BaseSpec("release/2.x", 0)),
    ({"warn_behind": 50}, BaseSpec(None, 50)),
    ({"branch": "main", "warn_behind": False}, BaseSpec("main", None)),
])
def test_a_branch_or_a_mapping(raw, expected):
    assert base(raw) == expected


@pytest.mark.parametrize(("raw", "problem"), [
    (["main"], 'stack "dev", field "base": [\'main\'] is not a branch or a mapping'),
    ({"brnch": "main"}, 'stack "dev", field "base.brnch": unknown field; did you mean "branch"?'),
    ({"branch": "a..b"}, 'stack "dev", field "base.branch": \'a..b\''),
    ({"branch": "agent/agent-1"}, "is the own branch of agent 'agent-1'"),
    ({"warn_behind": -1}, 'stack "dev", field "base.warn_behind": -1 is not a number of commits'),
    ({"warn_behind": "ten"}, 'field "base.warn_behind": \'ten\' is not a number of commits'),
])
def test_a_bad_base_is_named_with_stack_and_field(raw, problem):
    with pytest.raises(FleetConfigError) as error:
        base(raw)
    assert problem in str(error.value)
