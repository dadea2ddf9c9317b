"""GitHub App installation tokens (agentfleet/githubapp.py) against the GitHub-shaped server on
loopback (tests/unit/github_api.py), which verifies the App's JWT with the App's public key and its
time claims as GitHub documents them, and answers with GitHub's documented shapes (not recorded)."""

from __future__ import annotations

import json
import time
from typing import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agentfleet.apptokens import WRITE_CREDENTIAL, TokenRefresh, refresh_from_outputs
from agentfleet.errors import OutputsInvalid
from agentfleet.forge import Forge, ForgeClient, ForgeError
from agentfleet.githubapp import PERMISSIONS, GitHubApp, app_jwt, key_problem, mint, revoke, token_due
from agentfleet.pulls import forge_from_outputs, open_pull, pull_client
from components.keys import generate_ed25519
from components.apptoken import AppTokenDriver
from components.deploykey import forge_problems
from tests.unit.github_api import TOKEN, GitHubApi, app_key_pair
from tests.unit.spec_helpers import agent, load, problems

NOW = 1_800_000_000.0


PRIVATE, PUBLIC = app_key_pair()


@pytest.fixture
def github() -> Iterator[GitHubApi]:
    api = GitHubApi(app_public_key=PUBLIC, clock=lambda: NOW).start()
    yield api
    api.stop()


def app(key: str = PRIVATE, installation: int = 7654321) -> GitHubApp:
    return GitHubApp(123456, installation, "github_app_key", key)


def forge(github: GitHubApi) -> Forge:
    return Forge("github", github.url, "octo-org/app", TOKEN)


def test_a_token_is_minted_with_a_jwt_github_verifies_and_lives_an_hour(github):
    token = mint(app(), forge(github), now=NOW)
    assert token.token in github.tokens and token.expires_at == NOW + 3600
    sent = github.sent[-1]
    assert (sent.method, sent.path) == ("POST", "/app/installations/7654321/access_tokens")
    jwt = sent.headers["authorization"].removeprefix("Bearer ")
    assert jwt.count(".") == 2 and jwt not in sent.path and not sent.query
    assert PRIVATE not in repr(app()) and token.token not in repr(token)


def test_the_token_is_scoped_to_the_one_repository_and_to_contents_and_pull_requests(github):
    token = mint(app(), forge(github), now=NOW)
    assert github.sent[-1].body == {"repositories": ["app"], "permissions": PERMISSIONS}
    assert github.tokens[token.token]["repositories"] == ["app"]
    assert github.tokens[token.token]["permissions"] == {"contents": "write", "pull_requests": "write"}


def test_a_token_is_due_for_refresh_when_less_than_the_margin_is_left(github):
    token = mint(app(), forge(github), now=NOW)
    assert not token.due(NOW) and not token.due(NOW + 2999)
    assert token.due(NOW + 3001) and token.due(NOW + 3600) and token.due(NOW + 7200)
    assert token_due(None, NOW)  # an agent whose token's expiry is unknown gets a fresh one


def test_the_jwt_lives_less_than_ten_minutes_and_a_later_clock_mints_again(github):
    first = mint(app(), forge(github), now=NOW)
    github.clock = lambda: NOW + 3300
    second = mint(app(), forge(github), now=NOW + 3300)
    assert second.token != first.token and second.expires_at == NOW + 3300 + 3600
    # A JWT signed an hour ago is refused: the server checks `exp` against its own clock.
    stale = app_jwt(app(), NOW)
    assert github._jwt_problem(stale) is not None and github._jwt_problem(app_jwt(app(), NOW + 3300)) is None


def test_another_key_is_refused_naming_the_private_key_field(github):
    other, _ = app_key_pair()
    with pytest.raises(ForgeError) as raised:
        mint(app(other), forge(github), now=NOW)
    message = str(raised.value)
    assert raised.value.status == 401 and 'field "forge.app.private_key"' in message
    assert "A JSON web token could not be decoded" in message and "pulumi config set --secret github_app_key" in message
    assert other not in message and PRIVATE not in message


def test_a_clock_an_hour_off_is_refused_and_the_message_says_so(github):
    with pytest.raises(ForgeError, match=r'forge.app.private_key.*clock is off'):
        mint(app(), forge(github), now=NOW - 3600)


def test_an_installation_github_does_not_have_names_the_installation_field(github):
    with pytest.raises(ForgeError, match=r'field "forge.app.installation".*no installation 99 of App 123456'):
        mint(app(installation=99), forge(github), now=NOW)


def test_a_repository_outside_the_installation_or_a_permission_not_granted_is_refused(github):
    github.installation_repositories = {"other"}
    with pytest.raises(ForgeError, match=r'"forge.app.installation".*cannot reach octo-org/app'):
        mint(app(), forge(github), now=NOW)
    github.installation_repositories = {"app"}
    github.installation_permissions = {"contents": "read", "pull_requests": "write"}
    with pytest.raises(ForgeError, match=r"HTTP 422: The permissions requested are not granted"):
        mint(app(), forge(github), now=NOW)


def test_revoking_ends_the_token_and_a_second_revoke_is_fine(github):
    token = mint(app(), forge(github), now=NOW)
    revoke(forge(github), token.token)
    assert token.token not in github.tokens
    revoke(forge(github), token.token)


def test_a_key_that_is_no_app_key_is_named():
    assert key_problem(PRIVATE) is None
    assert "not a PEM private key" in key_problem("ghp_notakey")
    assert "not a PEM private key" in key_problem(generate_ed25519("x")[0])  # OpenSSH's format
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    assert "not an RSA key" in key_problem(ec_key)


# --- the config, the AppToken resource's driver, `agentfleet exec`'s refresh ---


HTTPS = "https://github.com/octo-org/app.git"
SECRETS = {"forge_token": TOKEN, "github_app_key": PRIVATE}


def fleet_config(app_block=None, **agent_fields):
    block = {"id": 123456, "installation": 7654321, "private_key": "github_app_key"} if app_block is None else app_block
    return {"forge": {"kind": "github", "repository": "octo-org/app", "token": "forge_token", "app": block},
            "agents": [agent(remote=HTTPS, **agent_fields), agent("agent-2", remote="git@github.com:octo-org/app.git")]}


def test_the_app_is_loaded_and_only_https_agents_push_with_its_tokens():
    spec = load(fleet_config(), SECRETS)
    assert (spec.app.id, spec.app.installation, spec.app.config_key) == (123456, 7654321, "github_app_key")
    assert [spec.mints_token(a) for a in spec.agents] == [True, False]
    assert PRIVATE not in repr(spec)


def test_every_app_problem_names_the_stack_and_field():
    found = problems(fleet_config({"id": "x", "installation": 0, "private_key": "github_app_key", "secret": 1}),
                     {"forge_token": TOKEN, "github_app_key": "not a key"})
    text = "\n".join(found)
    for field_name in ("forge.app.id", "forge.app.installation", "forge.app.private_key", "forge.app.secret"):
        assert f'field "{field_name}"' in text and 'stack "test"' in text
    assert "not a PEM private key" in text and "not a key" not in text.replace("not a PEM", "")
    unset = problems(fleet_config(), {"forge_token": TOKEN})
    assert any('"forge.app.private_key"' in p and "github_app_key is not set" in p for p in unset)


def test_an_app_agent_on_another_repository_is_named_by_its_remote():
    found = problems({**fleet_config(), "agents": [agent(remote="https://github.com/octo-org/other.git")]}, SECRETS)
    assert any('agent "agent-1", field "remote"' in p and "App token is minted for" in p for p in found)


def test_the_driver_mints_at_create_reads_a_due_token_as_gone_and_revokes_at_delete(github, monkeypatch):
    github.clock = time.time
    fields = {"api": github.url, "repository": "octo-org/app", "app_id": 123456, "installation": 7654321,
              "agent": "agent-1"}
    driver = AppTokenDriver()
    made = driver.create("agent-1", fields, PRIVATE)
    assert made["token"] in github.tokens and driver.read("agent-1", {**fields, **made}) == {}
    monkeypatch.setattr("components.apptoken.time.time", lambda: made["expires_at"] - 300)
    assert driver.read("agent-1", {**fields, **made}) is None  # `up` mints it again
    driver.delete("agent-1", {**fields, **made})
    assert made["token"] not in github.tokens
    with pytest.raises(ForgeError, match="forge.app.private_key"):
        driver.create("agent-1", fields, None)


class FakeAgent:
    """Records what `exec`'s refresh runs in an agent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ran: list[tuple[str, bytes]] = []
        self.endpoint = type("E", (), {"remote": HTTPS})()

    def run(self, command, *, cwd=None, stdin=None):
        self.ran.append((command, stdin))
        return type("R", (), {"exit_status": 0})()


def test_exec_refreshes_a_due_token_over_stdin_and_keeps_only_its_expiry(github, tmp_path):
    clock = [NOW]
    github.clock = lambda: clock[0]
    raw = {"forge": {"kind": "github", "api": github.url, "repository": "octo-org/app", "token": TOKEN,
                     "app": {"id": 123456, "installation": 7654321, "private_key": PRIVATE, "agents": ["agent-1"]}}}
    refresh = refresh_from_outputs(raw, tmp_path)
    refresh.clock = lambda: clock[0]
    one, two = FakeAgent("agent-1"), FakeAgent("agent-2")
    assert refresh.before(one) and not refresh.before(two)  # agent-2 pushes with its own key
    command, stdin = one.ran[-1]
    token = next(iter(github.tokens))
    assert command == WRITE_CREDENTIAL and token not in command
    assert stdin == f"https://x-access-token:{token}@github.com\n".encode()
    record = (tmp_path / "app-tokens.json").read_text()
    assert token not in record and PRIVATE not in record and str(int(NOW + 3600)) in record
    clock[0] = NOW + 2900  # 50 minutes later: still 11 minutes left, nothing minted
    again = refresh_from_outputs(raw, tmp_path)  # the next `agentfleet exec` process reads the record
    again.clock = lambda: clock[0]
    assert not again.before(one) and len(one.ran) == 1
    clock[0] = NOW + 3100  # less than ten minutes left: minted again before the command
    assert again.before(one) and len(github.tokens) == 2 and one.ran[-1][1] != stdin
    assert refresh_from_outputs({"forge": {**raw["forge"], "app": None}}, tmp_path) is None


def test_a_refused_key_during_exec_is_an_error_naming_the_field(github, tmp_path):
    other, _ = app_key_pair()
    refresh = TokenRefresh(forge(github), app(other), frozenset({"agent-1"}), tmp_path / "r.json", lambda: NOW)
    with pytest.raises(ForgeError, match='field "forge.app.private_key"'):
        refresh.before(FakeAgent("agent-1"))


# --- which token the agent holds: exec's own record against the expiry `up` exported ---


def outputs_with(github: GitHubApi, expires: dict) -> dict:
    return {"forge": {"kind": "github", "api": github.url, "repository": "octo-org/app", "token": "",
                      "app": {"id": 123456, "installation": 7654321, "private_key": PRIVATE, "agents": ["agent-1"],
                              "expires": expires}}}


def exec_process(raw: dict, tmp_path, clock: list[float]) -> TokenRefresh:
    """What one `agentfleet exec` process builds from the stack's outputs and the record."""
    refresh = refresh_from_outputs(raw, tmp_path)
    refresh.clock = lambda: clock[0]
    return refresh


def test_after_up_exec_goes_by_the_expiry_up_exported_and_mints_nothing_while_it_is_fresh(github, tmp_path):
    clock = [NOW + 60]
    github.clock = lambda: clock[0]
    agent_1 = FakeAgent("agent-1")
    raw = outputs_with(github, {"agent-1": NOW + 3600})  # `up` wrote a token a minute ago
    assert not exec_process(raw, tmp_path, clock).before(agent_1) and github.minted == []
    clock[0] = NOW + 3100  # that token is due: exec mints over it
    assert exec_process(raw, tmp_path, clock).before(agent_1) and len(github.minted) == 1
    record = json.loads((tmp_path / "app-tokens.json").read_text())
    assert record == {"agent-1": {"expires_at": NOW + 3100 + 3600, "over": NOW + 3600}}
    clock[0] = NOW + 3200  # the outputs still say up's old token: the record holds, nothing minted
    assert not exec_process(raw, tmp_path, clock).before(agent_1) and len(github.minted) == 1


def test_a_token_up_wrote_after_exec_minted_is_the_one_exec_goes_by(github, tmp_path):
    """The gap the record alone had: exec's record says an hour, but a later `up` wrote its own
    token into the agent (it minted one: the outputs name another expiry), which runs out first."""
    clock = [NOW + 3100]
    github.clock = lambda: clock[0]
    agent_1 = FakeAgent("agent-1")
    assert exec_process(outputs_with(github, {"agent-1": NOW + 3600}), tmp_path, clock).before(agent_1)
    # 5 minutes later an `up` mints (say, the App key changed) and rewrites the agent's cloud-config:
    # the agent now holds up's token, which lives to NOW + 3400 + 3600, less than exec's record says.
    later = outputs_with(github, {"agent-1": NOW + 3400 + 1800})
    clock[0] = NOW + 3400 + 1300  # exec's own would have 40 minutes left; up's has 8: exec mints
    assert exec_process(later, tmp_path, clock).before(agent_1) and len(github.minted) == 2
    assert json.loads((tmp_path / "app-tokens.json").read_text())["agent-1"]["over"] == NOW + 3400 + 1800


def test_an_older_record_or_older_outputs_still_work(github, tmp_path):
    clock = [NOW]
    github.clock = lambda: clock[0]
    (tmp_path / "app-tokens.json").write_text(json.dumps({"agent-1": NOW + 3000}))  # agentfleet's earlier format
    assert not exec_process(outputs_with(github, {"agent-1": NOW + 3600}), tmp_path, clock).before(FakeAgent("agent-1"))
    raw = outputs_with(github, {})
    del raw["forge"]["app"]["expires"]  # outputs of an `up` before the expiry was exported
    (tmp_path / "app-tokens.json").unlink()
    refresh = exec_process(raw, tmp_path, clock)
    assert refresh.expiry("agent-1") is None and refresh.before(FakeAgent("agent-1"))  # unknown: minted
    assert refresh.expiry("agent-1") == NOW + 3600


# --- `agentfleet pr` with the App: no personal token ---


def test_pr_with_an_app_opens_the_pull_request_with_a_token_minted_for_it_alone_then_revoked(github):
    github.clock = time.time  # `pr` signs its JWT with this machine's clock
    github.branches.add("agent/agent-1")
    raw = outputs_with(github, {"agent-1": NOW + 3600})  # no forge.token: the App's fleet has none
    with pull_client(raw, "stack 'dev'") as client:
        outcome = open_pull(client, "dev", "agent-1", "agent/agent-1", client.repository().default_branch, None,
                            client.open_pulls())
    assert outcome.action == "opened" and github.pulls[0]["head"]["ref"] == "agent/agent-1"
    (token,) = github.minted
    assert github.sent[0].body == {"repositories": ["app"], "permissions": {"pull_requests": "write"}}
    opened = next(sent for sent in github.sent if (sent.method, sent.path) == ("POST", "/repos/octo-org/app/pulls"))
    assert opened.headers["authorization"] == f"Bearer {token}"
    assert token not in github.tokens  # revoked once `pr` is done


def test_pr_with_an_app_that_may_not_open_pull_requests_names_the_field_and_the_permission(github):
    github.clock = time.time
    github.installation_permissions = {"contents": "write", "metadata": "read"}
    with pytest.raises(ForgeError) as raised:
        with pull_client(outputs_with(github, {}), "stack 'dev'"):
            pass
    message = str(raised.value)
    assert raised.value.status == 422 and 'field "forge.app.installation"' in message
    assert "lacks the permissions pull_requests: write" in message and "Permissions: Pull requests" in message
    assert github.minted == []


def test_an_installation_token_reaches_only_as_far_as_its_permissions(github):
    """The stand-in, as GitHub: a token minted for contents alone may not open a pull request."""
    github.branches.add("agent/agent-1")
    token = mint(app(), forge(github), now=NOW, permissions={"contents": "write"})
    client = ForgeClient(Forge("github", github.url, "octo-org/app", token.token), token_field="forge.app")
    assert client.repository().default_branch == "main" and client.branch_exists("agent/agent-1")
    with pytest.raises(ForgeError, match=r"HTTP 403: Resource not accessible by integration"):
        client.create_pull("agent/agent-1", "main", "t", "b")
    revoke(forge(github), token.token)
    with pytest.raises(ForgeError, match=r"HTTP 401"):
        client.repository()


def test_pr_without_an_app_still_needs_the_forge_token(github):
    raw = outputs_with(github, {})
    del raw["forge"]["app"]
    with pytest.raises(OutputsInvalid, match="must hold kind, api, repository, token"):
        forge_from_outputs(raw, "stack 'dev'")


def test_an_app_fleet_needs_no_forge_token_unless_an_agent_registers_a_deploy_key(github):
    config = fleet_config()
    del config["forge"]["token"]
    found = problems(config, {"github_app_key": PRIVATE})  # agent-2's ssh remote needs a deploy key
    assert len(found) == 1 and 'stack "test", field "forge.token"' in found[0] and "agents agent-2" in found[0]
    config["agents"] = config["agents"][:1]
    config["forge"]["api"] = github.url
    spec = load(config, {"github_app_key": PRIVATE})
    assert spec.forge.token == "" and spec.mints_token(spec.agents[0])
    assert forge_problems(spec) == [] and github.sent == []  # nothing to ask with: the App's tokens say at `up`
