"""The forge client, the DeployKey driver and `agentfleet pr`'s logic against a GitHub-shaped
server on loopback (tests/unit/github_api.py: GitHub's documented responses, not recorded ones);
the `forge:` config's validation. Gitea itself is tested end to end (tests/e2e/test_forge_gitea.py)."""

from __future__ import annotations

import io
from typing import Iterator

import pytest

from agentfleet.cli import main
from agentfleet.forge import Forge, ForgeClient, ForgeError, key_body
from agentfleet.pulls import forge_from_outputs, open_pull
from components.deploykey import TOKEN as TOKEN_OUTPUT
from components.deploykey import DeployKeyDriver, forge_problems
from components.keys import generate_ed25519
from components.reconciled import SECRET, Reconciler, digest
from tests.unit.github_api import TOKEN, GitHubApi
from tests.unit.spec_helpers import agent, load, problems

PUBLIC = generate_ed25519("agent-1@agentfleet")[1]


@pytest.fixture
def github() -> Iterator[GitHubApi]:
    api = GitHubApi().start()
    yield api
    api.stop()


def forge(github: GitHubApi, token: str = TOKEN, repository: str = "octo-org/app") -> Forge:
    return Forge("github", github.url, repository, token)


def test_the_client_adds_a_write_deploy_key_with_github_headers_and_the_key_without_its_comment(github):
    key = ForgeClient(forge(github)).add_deploy_key("agentfleet dev/agent-1", PUBLIC)
    assert (key.title, key.key, key.read_only) == ("agentfleet dev/agent-1", key_body(PUBLIC), False)
    sent = github.sent[-1]
    assert (sent.method, sent.path) == ("POST", "/repos/octo-org/app/keys")
    assert sent.body == {"title": "agentfleet dev/agent-1", "key": key_body(PUBLIC), "read_only": False}
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["x-github-api-version"] == "2022-11-28"
    assert sent.headers["accept"] == "application/vnd.github+json"
    assert TOKEN not in sent.path and not sent.query


def test_gitea_takes_the_token_in_its_own_authorization_scheme():
    assert Forge("gitea", "http://127.0.0.1:3000/api/v1", "o/r", "abc").authorization() == "token abc"
    assert "abc" not in repr(Forge("gitea", "http://127.0.0.1:3000/api/v1", "o/r", "abc"))


def test_a_key_gone_from_the_repository_reads_as_none_and_deletes_without_error(github):
    client = ForgeClient(forge(github))
    key = client.add_deploy_key("t", PUBLIC)
    client.delete_deploy_key(key.id)
    assert client.deploy_key(key.id) is None
    client.delete_deploy_key(key.id)  # already gone: fine


def test_a_missing_repository_is_an_error_naming_it_and_the_fix_not_a_missing_key(github):
    client = ForgeClient(forge(github, repository="octo-org/nope"))
    with pytest.raises(ForgeError) as caught:
        client.deploy_key(64000001)
    assert caught.value.status == 404
    assert "octo-org/nope" in str(caught.value) and "check forge.repository" in str(caught.value)


def test_a_bad_token_is_refused_with_how_to_set_another_and_the_token_never_in_the_message(github):
    with pytest.raises(ForgeError) as caught:
        ForgeClient(forge(github, token="ghp_revoked")).add_deploy_key("t", PUBLIC)
    message = str(caught.value)
    assert caught.value.status == 401 and "Bad credentials" in message
    assert "pulumi config set --secret" in message and "ghp_revoked" not in message


def test_a_key_in_use_elsewhere_says_what_the_forge_said(github):
    client = ForgeClient(forge(github))
    client.add_deploy_key("first", PUBLIC)
    with pytest.raises(ForgeError, match="HTTP 422: Validation Failed: key is already in use"):
        client.add_deploy_key("second", PUBLIC)


def test_an_unreachable_forge_names_the_api_address():
    with pytest.raises(ForgeError, match=r"cannot reach the github API at http://127.0.0.1:9/ \(.*\); check forge.api"):
        ForgeClient(Forge("github", "http://127.0.0.1:9/", "o/r", TOKEN), timeout=2).repository()


def test_lists_follow_the_pages(github):
    for number in range(120):
        github.keys[number] = {"id": number, "key": f"ssh-ed25519 K{number}", "title": f"k{number}", "read_only": True}
    assert [key.id for key in ForgeClient(forge(github)).deploy_keys()] == list(range(120))
    assert [sent.query["page"] for sent in github.sent] == [["1"], ["2"], ["3"]]


def test_the_driver_registers_reads_back_heals_and_removes_and_keeps_the_token_secret(github):
    reconciler = Reconciler(DeployKeyDriver())
    declared = {"kind": "github", "api": github.url, "repository": "octo-org/app", "title": "agentfleet dev/agent-1",
                "public_key": PUBLIC, "read_only": False, "key_id": None, TOKEN_OUTPUT: None, SECRET: TOKEN}
    made = reconciler.create(declared)
    assert made.id == "agentfleet dev/agent-1" and made.outs[SECRET] == digest(TOKEN)
    assert made.outs[TOKEN_OUTPUT] == TOKEN and TOKEN_OUTPUT in DeployKeyDriver.secret_outputs
    key_id = made.outs["key_id"]
    assert github.keys[key_id]["read_only"] is False
    assert reconciler.read(made.id, made.outs).id == made.id
    del github.keys[key_id]  # deleted on the forge
    assert reconciler.read(made.id, made.outs).id is None  # gone from the state: `up` makes it again
    again = reconciler.create(declared)
    reconciler.delete(again.id, again.outs)
    assert github.keys == {}


def test_a_changed_token_is_kept_in_place_and_a_new_key_replaces(github):
    plan = Reconciler(DeployKeyDriver()).diff(
        {"public_key": PUBLIC, "title": "t", SECRET: digest(TOKEN)}, {"public_key": PUBLIC, "title": "t", SECRET: "new"})
    assert plan.changed == [SECRET] and plan.replaces == []
    plan = Reconciler(DeployKeyDriver()).diff(
        {"public_key": PUBLIC, "title": "t", SECRET: digest(TOKEN)},
        {"public_key": generate_ed25519("x")[1], "title": "t", SECRET: TOKEN})
    assert plan.replaces == ["public_key"]


def fleet_with_forge(github: GitHubApi, token: str = TOKEN, **forge_fields):
    return load({"forge": {"kind": "github", "api": github.url, "repository": "octo-org/app", "token": "forgeToken",
                           **forge_fields},
                 "agents": [agent("agent-1", remote="git@github.com:octo-org/app.git")]}, {"forgeToken": token})


def test_preflight_passes_an_admin_token_and_refuses_others_naming_stack_and_field(github):
    assert forge_problems(fleet_with_forge(github)) == []
    (problem,) = forge_problems(fleet_with_forge(github, token="ghp_revoked"))
    assert problem.startswith('stack "test", field "forge": github refused to read the repository on octo-org/app (HTTP 401')
    github.admin = False
    (problem,) = forge_problems(fleet_with_forge(github))
    assert problem.startswith('stack "test", field "forge.token": the token may not manage the deploy keys of '
                              "octo-org/app (agents agent-1 need theirs registered)")


def test_pr_opens_once_shows_after_and_skips_a_branch_not_pushed_or_with_nothing_to_merge(github):
    client = ForgeClient(forge(github))
    github.branches |= {"agent/agent-1", "empty"}
    made = open_pull(client, "dev", "agent-1", "agent/agent-1", "main", None, client.open_pulls())
    assert (made.action, made.pull.number, made.pull.title) == ("opened", 1, "agentfleet dev/agent-1: agent/agent-1")
    shown = open_pull(client, "dev", "agent-1", "agent/agent-1", "main", "other title", client.open_pulls())
    assert (shown.action, shown.pull) == ("existing", made.pull) and len(github.pulls) == 1
    assert shown.line() == f"agent-1: open #1 {made.pull.url} (agent/agent-1 -> main)\n"
    missing = open_pull(client, "dev", "agent-2", "agent/agent-2", "main", None, [])
    assert missing.line() == ("agent-2: skipped: the forge has no branch agent/agent-2; push it first: "
                              "agentfleet exec agent-2 -- git push -u origin agent/agent-2\n")
    empty = open_pull(client, "dev", "agent-3", "empty", "main", None, [])
    assert empty.action == "skipped" and "No commits between main and empty" in empty.reason
    assert empty.to_json()["number"] is None


def test_pr_reads_the_forge_from_the_outputs_or_says_how_to_get_one():
    with pytest.raises(Exception, match=r"has no forge: add `forge:` to its fleet config \(docs/forge.md\)"):
        forge_from_outputs({"agents": {}}, "stack 'dev'")
    with pytest.raises(Exception, match="read the outputs with --show-secrets"):
        forge_from_outputs({"forge": "[secret]"}, "stack 'dev'")
    raw = {"forge": {"kind": "gitea", "api": "http://127.0.0.1:3000/api/v1", "repository": "o/r", "token": "t"}}
    assert forge_from_outputs(raw, "x") == (Forge("gitea", "http://127.0.0.1:3000/api/v1", "o/r", "t"), None)


@pytest.mark.parametrize("argv", [["pr"], ["pr", "agent-1", "--all"], ["pr", "--all", "--title", "x"]])
def test_pr_wants_one_name_or_all_before_reading_anything(argv):
    out, err = io.StringIO(), io.StringIO()
    assert main(["--outputs", "/nonexistent.json", *argv], out, err, {}) == 2
    assert err.getvalue() == "agentfleet: give one agent NAME (with --title, if you like) or --all: agentfleet pr agent-1\n"


def test_the_forge_config_is_loaded_with_github_as_the_default_api():
    spec = load({"forge": {"kind": "github", "repository": "octo-org/app", "token": "forgeToken"},
                 "agents": [agent("agent-1", remote="git@github.com:octo-org/app.git")]}, {"forgeToken": "t"})
    assert spec.forge == Forge("github", "https://api.github.com", "octo-org/app", "t")
    assert spec.registers_key(spec.agents[0])


def test_every_forge_problem_is_named_at_once():
    found = problems({"forge": {"kind": "gitlab", "api": "ftp://x", "repository": "app", "token": "missing",
                                "tokn": 1}, "agents": [agent()]})
    assert found == [
        'stack "test", field "forge.tokn": unknown field; did you mean "token"?',
        'stack "test", field "forge.kind": \'gitlab\' is not a forge this fleet can drive; use one of github, gitea',
        'stack "test", field "forge.api": \'ftp://x\' is not the forge\'s API address; use e.g. https://api.github.com '
        "(GitHub, the default) or http://HOST:3000/api/v1 (Gitea)",
        'stack "test", field "forge.repository": \'app\' is not a repository; use owner/name',
        'stack "test", field "forge.token": config key missing is not set; run `pulumi config set --secret missing` '
        "and paste the token on its standard input",
    ]


def test_an_agent_whose_key_would_go_to_another_repository_is_refused():
    found = problems({"forge": {"kind": "gitea", "api": "http://127.0.0.1:3000/api/v1", "repository": "team/app",
                                "token": "forgeToken"},
                      "agents": [agent("agent-1", remote="ssh://git@127.0.0.1:2222/team/other.git",
                                       known_hosts=["[127.0.0.1]:2222 ssh-ed25519 AAAA"])]}, {"forgeToken": "t"})
    assert found == ['stack "test", agent "agent-1", field "remote": is the repository \'team/other\', but '
                     "forge.repository is 'team/app', where the agent's deploy key is registered; point the remote there"]
