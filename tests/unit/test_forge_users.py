"""Per-agent forge users against the GitHub-shaped server on loopback (tests/unit/github_api.py:
GitHub's documented responses, not recorded ones): the user's own SSH keys through the client and
the DeployKey driver (`owner`), the preflight that asks with the user's token, and the validation
of `forge_user:`. Gitea is tested end to end (tests/e2e/test_forge_users_gitea.py)."""

from __future__ import annotations

from typing import Iterator

import pytest

from agentfleet.forge import Forge, ForgeClient, ForgeError, key_body
from components.deploykey import OWNER, DeployKeyDriver, forge_problems
from components.deploykey import TOKEN as TOKEN_OUTPUT
from components.keys import generate_ed25519
from components.reconciled import SECRET, Reconciler, digest
from components.spec import ForgeUser
from tests.unit.github_api import BOT_TOKEN, TOKEN, GitHubApi
from tests.unit.spec_helpers import agent, load, problems

PUBLIC = generate_ed25519("agent-1@agentfleet")[1]
REMOTE = "git@github.com:octo-org/app.git"


@pytest.fixture
def github() -> Iterator[GitHubApi]:
    api = GitHubApi().start()
    yield api
    api.stop()


def bot(github: GitHubApi, token: str = BOT_TOKEN) -> ForgeClient:
    return ForgeClient(Forge("github", github.url, "octo-org/app", token), token_field="forge_user.token")


def test_a_user_key_goes_to_the_tokens_user_and_reads_as_none_once_gone(github):
    client = bot(github)
    key = client.add_user_key("agentfleet dev/agent-1", PUBLIC)
    assert (key.title, key.key, key.read_only) == ("agentfleet dev/agent-1", key_body(PUBLIC), False)
    assert github.user_keys[key.id]["owner"] == "octo-bot" and github.keys == {}
    assert github.sent[-1].body == {"title": "agentfleet dev/agent-1", "key": key_body(PUBLIC)}
    assert client.user_key(key.id) == key
    assert bot(github, TOKEN).user_key(key.id) is None  # another user's key is not octocat's
    client.delete_user_key(key.id)
    assert client.user_key(key.id) is None and github.user_keys == {}
    client.delete_user_key(key.id)  # already gone: fine


def test_a_refused_user_token_names_its_field_and_says_nothing_of_a_repository(github):
    with pytest.raises(ForgeError) as caught:
        bot(github, "ghp_revoked").user_key(64000001)  # a 404 for a bad token would be a 401 first here
    message = str(caught.value)
    assert caught.value.status == 401 and "octo-org/app" not in message and "ghp_revoked" not in message
    assert message.startswith("github refused to read the user's SSH key 64000001 (HTTP 401: Bad credentials)")
    assert "`pulumi config set --secret <forge_user.token key>`" in message


def declared(github: GitHubApi, owner) -> dict:
    return {"kind": "github", "api": github.url, "repository": "octo-org/app", "title": "agentfleet dev/agent-1",
            "public_key": PUBLIC, "read_only": False, OWNER: owner, "key_id": None, TOKEN_OUTPUT: None,
            SECRET: BOT_TOKEN if owner else TOKEN}


def test_the_driver_with_an_owner_registers_reads_back_heals_and_removes_the_users_key(github):
    reconciler = Reconciler(DeployKeyDriver())
    made = reconciler.create(declared(github, "octo-bot"))
    assert made.outs[TOKEN_OUTPUT] == BOT_TOKEN and made.outs[SECRET] == digest(BOT_TOKEN)
    key_id = made.outs["key_id"]
    assert github.user_keys[key_id]["owner"] == "octo-bot" and github.keys == {}
    assert reconciler.read(made.id, made.outs).id == made.id
    del github.user_keys[key_id]  # deleted on the forge
    assert reconciler.read(made.id, made.outs).id is None  # gone from the state: `up` makes it again
    again = reconciler.create(declared(github, "octo-bot"))
    reconciler.delete(again.id, again.outs)
    assert github.user_keys == {}


def test_a_deploy_key_made_before_forge_users_stays_one_and_a_new_owner_replaces_it(github):
    reconciler = Reconciler(DeployKeyDriver())
    old = {key: value for key, value in reconciler.create(declared(github, None)).outs.items() if key != OWNER}
    assert reconciler.read(old["title"], old).id == old["title"]  # no owner in its state: a deploy key
    assert not reconciler.diff(old, declared(github, None) | {SECRET: TOKEN}).changes
    assert reconciler.diff(old, declared(github, "octo-bot")).replaces == [OWNER]
    reconciler.delete(old["title"], old)
    assert github.keys == {}


def fleet(github: GitHubApi, user: str = "octo-bot", secrets: dict | None = None, **fields):
    return load({"forge": {"kind": "github", "api": github.url, "repository": "octo-org/app", "token": "forgeToken"},
                 "agents": [agent("agent-1", remote=REMOTE, forge_user={"name": user, "token": "botToken"}, **fields),
                            agent("agent-2", remote=REMOTE)]},
                {"forgeToken": TOKEN, "botToken": BOT_TOKEN, **(secrets or {})})


def test_forge_user_is_loaded_with_its_token_kept_out_of_repr(github):
    spec = fleet(github)
    assert spec.agents[0].forge_user == ForgeUser("octo-bot", "botToken", BOT_TOKEN)
    assert BOT_TOKEN not in repr(spec.agents[0]) and spec.agents[1].forge_user is None
    assert spec.registers_key(spec.agents[0])


def test_preflight_asks_with_the_users_token_and_refuses_with_the_fix(github):
    assert forge_problems(fleet(github)) == []
    where = 'stack "test", agent "agent-1", field "forge_user'
    (problem,) = forge_problems(fleet(github, user="octo-other"))
    assert problem == (f'{where}.token": config key botToken holds a token of \'octo-bot\', not of \'octo-other\'; '
                       "set octo-other's token there (or name octo-bot in forge_user.name)")
    github.pushers.discard("octo-bot")
    (problem,) = forge_problems(fleet(github))
    assert problem.startswith(f'{where}.name": octo-bot may not push to octo-org/app; give it write access')
    (problem,) = forge_problems(fleet(github, secrets={"botToken": "ghp_revoked"}))
    assert problem.startswith(f'{where}.token": github refused to read the token\'s user (HTTP 401')


def test_a_fleet_token_without_admin_rights_is_enough_when_every_generated_key_goes_to_a_user(github):
    github.admin = False
    spec = load({"forge": {"kind": "github", "api": github.url, "repository": "octo-org/app", "token": "forgeToken"},
                 "agents": [agent("agent-1", remote=REMOTE, forge_user={"name": "octo-bot", "token": "botToken"})]},
                {"forgeToken": TOKEN, "botToken": BOT_TOKEN})
    assert forge_problems(spec) == []
    (problem,) = forge_problems(fleet(github))  # agent-2 still needs a deploy key
    assert "(agents agent-2 need theirs registered)" in problem


def test_every_forge_user_problem_is_named_with_stack_agent_and_field():
    forge = {"kind": "gitea", "api": "http://127.0.0.1:3000/api/v1", "repository": "team/app", "token": "forgeToken"}
    remote = {"remote": "ssh://git@127.0.0.1:2222/team/app.git", "known_hosts": ["[127.0.0.1]:2222 ssh-ed25519 AAAA"]}
    found = problems({"forge": forge, "agents": [
        agent("agent-1", forge_user="bot-1", **remote),
        agent("agent-2", forge_user={"name": "-bot", "token": "missing", "tokn": 1}, **remote),
        agent("agent-3", forge_user={"name": "bot-3", "token": "botToken"}, credential={"ssh_key": "givenKey"},
              **remote),
    ]}, {"forgeToken": "t", "botToken": "b", "givenKey": generate_ed25519("k")[0]})
    assert found == [
        'stack "test", agent "agent-1", field "forge_user": \'bot-1\' is not a mapping; name the user and the config '
        "key of its token: `forge_user: {name: bot-agent-1, token: bot_agent_1_token}`",
        'stack "test", agent "agent-2", field "forge_user.tokn": unknown field; did you mean "token"?',
        'stack "test", agent "agent-2", field "forge_user.name": \'-bot\' is not a user name on a forge; use the '
        "machine account's login, e.g. bot-agent-1",
        'stack "test", agent "agent-2", field "forge_user.token": config key missing is not set; run '
        "`pulumi config set --secret missing` and paste the token on its standard input",
        'stack "test", agent "agent-3", field "forge_user": only an agent whose key the fleet generates for an ssh '
        "remote pushes as a forge user (its key becomes the user's); remove `credential` or forge_user",
    ]
    found = problems({"agents": [agent("agent-1", forge_user={"name": "bot-1", "token": "botToken"}, **remote)]},
                     {"botToken": "b"})
    assert found == ['stack "test", agent "agent-1", field "forge_user": needs the fleet\'s `forge:` (the forge the '
                     "user is on); add `forge: {kind: gitea, api: ..., repository: owner/name, token: forge_token}`"]
