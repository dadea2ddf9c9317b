"""Property tests: from the fleet config (load_fleet) through the rendered cloud-config
(render_cloud_config) to the agent's ~/.gitconfig as the real git reads it.

Every value the spec accepts lands exactly: `git config` reads it back unchanged, and git would
write the identity into a commit unchanged (`git var GIT_AUTHOR_IDENT`). Every value git would
read differently is refused by load_fleet, naming stack, agent and field, before any resource
exists. git itself is the oracle: for branches, `git check-ref-format --branch`.
"""

from __future__ import annotations

import subprocess
from typing import Any

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agentfleet.sshkeys import host_key_name
from components.cloudinit import AgentKeys, render_cloud_config
from components.keys import generate_ed25519
from components.spec import (
    GIT_IDENT_STRIPS,
    FleetConfigError,
    load_fleet,
    parse_remote,
    unwritable,
)
from tests.unit.git_reader import git_author, git_config

PROPERTY = settings(max_examples=200, deadline=None)
_HOST_PRIVATE, _HOST_PUBLIC = generate_ed25519("host")
KEYS = AgentKeys(operator_public_key=generate_ed25519("op")[1], host_private_key=_HOST_PRIVATE,
                 host_public_key=_HOST_PUBLIC)
IDENTITY = {"name": "Agent One", "email": "agent-1@example.com"}

# Characters that have broken config files, YAML documents and ident lines before.
TRICKY = list("\"'\\#;:,<>=[]{}@/.- \t\n\r\x00\x1b\x7f\x85\xa0\u2028\u2029\ufeffüßÆ漢😀")
UNWRITABLE = list("\n\r\t\x00\x1b\x7f\x85\u2028\u2029")


def text(alphabet: st.SearchStrategy[str], min_size: int = 0, max_size: int = 24) -> st.SearchStrategy[str]:
    return st.lists(alphabet, min_size=min_size, max_size=max_size).map("".join)


anything = text(st.one_of(st.sampled_from(TRICKY), st.characters()))
# What git keeps inside an identity: no control characters, no '<' or '>'.
inner_char = st.one_of(st.sampled_from([c for c in TRICKY if c not in "<>" and not unwritable(c)]),
                       st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters="<>"))
# ...and what it keeps at either end: none of the crud it strips there either.
edge_char = inner_char.filter(lambda c: ord(c) > 32 and c not in GIT_IDENT_STRIPS)
kept_name = st.one_of(edge_char, st.tuples(edge_char, text(inner_char), edge_char).map("".join))

ATEXT = "abcxyzABCZ0189!#$%&'*+/=?^_`{|}~-"
atom = text(st.one_of(st.sampled_from(ATEXT), st.sampled_from("üß漢")), min_size=1, max_size=8)
label = st.sampled_from(["example", "com", "x-1", "a", "9", "bücher", "例子"])
kept_email = st.tuples(
    st.lists(atom, min_size=1, max_size=3).map(".".join).filter(lambda local: not local.startswith("'")),
    st.lists(label, min_size=2, max_size=3).map(".".join),
).map("@".join)


def gitconfig(**agent: Any) -> str:
    """The ~/.gitconfig load_fleet + render_cloud_config give this agent (FleetConfigError if refused)."""
    raw = {"agents": [{"name": "agent-1", "identity": IDENTITY, **agent}]}
    (spec,) = load_fleet("props", raw, {}.get).agents
    document = yaml.safe_load(render_cloud_config(spec, KEYS))
    return next(entry["content"] for entry in document["write_files"] if entry["path"] == "/home/agent/.gitconfig")


def refusal(**agent: Any) -> list[str]:
    try:
        gitconfig(**agent)
    except FleetConfigError as error:
        return error.problems
    raise AssertionError(f"accepted: {agent!r}")


def named(problems: list[str], field: str) -> bool:
    return bool(problems) and all(p.startswith(f'stack "props", agent "agent-1", field "{field}') for p in problems)


@PROPERTY
@given(name=anything)
@example(name='Robert "Bobby" O\'Brien; Jr')
@example(name="#1 agent")
@example(name="x\n[core]\n\tsshCommand = touch /tmp/owned")
def test_any_name_lands_exactly_or_is_refused_by_the_spec(name):
    try:
        content = gitconfig(identity={**IDENTITY, "name": name})
    except FleetConfigError as error:
        assert named(error.problems, "identity"), error.problems
        return
    assert git_config(content)["user.name"] == name
    assert git_author(content) == (name, IDENTITY["email"])
    assert "core.sshcommand" not in git_config(content)


@PROPERTY
@given(name=kept_name, email=kept_email)
@example(name='Robert "Bobby" O\'Brien; Jr', email="o'brien#jr@example.com")
@example(name="Zoë \\ 漢字 #; 'x' \"y\" Ω", email="zoë@bücher.example")
def test_every_identity_git_keeps_is_accepted_and_lands_exactly(name, email):
    content = gitconfig(identity={"name": name, "email": email})
    read = git_config(content)
    assert (read["user.name"], read["user.email"]) == (name, email)
    assert git_author(content) == (name, email)


@PROPERTY
@given(name=kept_name, bad=st.one_of(st.sampled_from(UNWRITABLE + ["<", ">"]),
                                     st.characters(categories=("Cc", "Zl", "Zp"))),
       at=st.integers(min_value=0))
def test_control_characters_and_delimiters_are_refused_anywhere(name, bad, at):
    at %= len(name) + 1
    assert named(refusal(identity={**IDENTITY, "name": name[:at] + bad + name[at:]}), "identity.name")
    assert named(refusal(identity={**IDENTITY, "email": "a" + bad + "b@example.com"}), "identity.email")


@PROPERTY
@given(name=kept_name, crud=st.sampled_from(sorted(GIT_IDENT_STRIPS) + [" "]), front=st.booleans())
def test_what_git_strips_from_the_ends_is_refused(name, crud, front):
    edged = crud + name if front else name + crud
    assert named(refusal(identity={**IDENTITY, "name": edged}), "identity.name")


@PROPERTY
@given(email=anything)
@example(email="a@b.c\n")
@example(email='"quoted"@example.com')
@example(email="a;b@example.com")
def test_any_email_lands_exactly_or_is_refused_by_the_spec(email):
    try:
        content = gitconfig(identity={**IDENTITY, "email": email})
    except FleetConfigError as error:
        assert named(error.problems, "identity"), error.problems
        return
    assert git_config(content)["user.email"] == email
    assert git_author(content) == (IDENTITY["name"], email)


def check_ref_format(branch: str) -> str | None:
    """What `git check-ref-format --branch` makes of branch, or None if git refuses it."""
    done = subprocess.run(["git", "check-ref-format", "--branch", branch], capture_output=True, cwd="/")
    return done.stdout.decode("utf-8").rstrip("\n") if done.returncode == 0 else None


branch_token = st.one_of(st.sampled_from(TRICKY + list("~^?*ab") + ["agent/", "..", "@{", ".lock", "HEAD", "-", "//"]),
                         st.characters())


@PROPERTY
@given(branch=text(branch_token, max_size=12))
@example(branch="agent/ü-1")
@example(branch="-x")
@example(branch="a.lock/b")
@example(branch="x\n")
def test_a_branch_lands_exactly_when_git_takes_it(branch):
    try:
        content = gitconfig(branch=branch)
    except FleetConfigError as error:
        assert named(error.problems, "branch"), error.problems
        # Beyond what git refuses, only text that cannot travel exactly and '@' (HEAD to git).
        assert branch == "@" or unwritable(branch) or check_ref_format(branch) is None
        return
    assert check_ref_format(branch) == branch
    assert git_config(content)["agentfleet.branch"] == branch


path_char = st.one_of(st.sampled_from(list("/#;\"'\\:@.~-_ü漢")), st.characters(categories=("L", "N")))
repo_path = text(path_char, min_size=1, max_size=16).filter(lambda p: p.strip("/") and not p.startswith("-"))
host = st.sampled_from(["gitserver", "git.example.com", "GIT.example.com", "10.0.0.5", "[::1]", "[2001:db8::7]", "x-1.y"])
remote = st.one_of(
    st.builds(lambda h, port, p: f"ssh://git@{h}{port}/{p.lstrip('/')}", host,
              st.sampled_from(["", ":2222", ":22"]), repo_path),
    st.builds(lambda h, p: f"git@{h}:{p}", host, repo_path),
    st.builds(lambda h, p: f"https://{h}/{p.lstrip('/')}", host, repo_path),
)


@PROPERTY
@given(url=remote)
def test_every_ssh_or_https_remote_lands_exactly(url):
    parsed = parse_remote(url)
    known = [f"{host_key_name(parsed.host, parsed.port)} ssh-ed25519 AAAA"]
    assert git_config(gitconfig(remote=url, known_hosts=known))["agentfleet.remote"] == url
