"""GitHub App installation tokens (agentfleet/githubapp.py) against the GitHub-shaped server on
loopback (tests/unit/github_api.py), which verifies the App's JWT with the App's public key and its
time claims as GitHub documents them, and answers with GitHub's documented shapes (not recorded)."""

from __future__ import annotations

from typing import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agentfleet.forge import Forge, ForgeError
from agentfleet.githubapp import PERMISSIONS, GitHubApp, app_jwt, key_problem, mint, revoke, token_due
from components.keys import generate_ed25519
from tests.unit.github_api import TOKEN, GitHubApi

NOW = 1_800_000_000.0


def rsa_pem() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


PRIVATE, PUBLIC = rsa_pem()


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
    other, _ = rsa_pem()
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
