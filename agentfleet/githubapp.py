"""GitHub App installation tokens: what an agent pushes with when the fleet names a GitHub App.

Why tokens and not the App's key: an installation token lives one hour and carries only what it
was minted for (one repository; contents and pull requests: write), so an agent that leaks it
leaks an hour of pushes to that repository. The App's private key, which can mint tokens for every
repository the App is installed on, stays on the operator's side: it signs a JWT here (RS256, ten
minutes at most, as GitHub requires) and only the minted token ever travels to an agent.

Where the refresh runs is docs/forge.md's "GitHub App tokens": `pulumi up` mints at create and
again when a token is due, `agentfleet exec` re-mints before a command when fewer than
REFRESH_MARGIN are left.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Optional

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from agentfleet.forge import Forge, ForgeClient, ForgeError

# What an agent's token may do: push its branch (contents) and open pull requests, nothing else.
PERMISSIONS = {"contents": "write", "pull_requests": "write"}
# What `agentfleet pr`'s token may do: read the repository and its branches (metadata, which every
# installation token has) and open pull requests.
PULL_PERMISSIONS = {"pull_requests": "write"}
JWT_LIFETIME = 540  # seconds; GitHub refuses an `exp` more than ten minutes ahead
CLOCK_SKEW = 60  # `iat` this far in the past, as GitHub advises against clock drift
REFRESH_MARGIN = 600  # seconds: a token with less left is minted again before it is used

Clock = Callable[[], float]


@dataclass(frozen=True)
class GitHubApp:
    """A GitHub App installed on the fleet's repository; `private_key` is its PEM key (a secret)."""

    id: int
    installation: int
    config_key: str  # where the key came from, for messages
    private_key: str = field(repr=False)


@dataclass(frozen=True)
class InstallationToken:
    token: str = field(repr=False)
    expires_at: float  # seconds since the epoch

    def due(self, now: float, margin: float = REFRESH_MARGIN) -> bool:
        return token_due(self.expires_at, now, margin)


def token_due(expires_at: Optional[float], now: float, margin: float = REFRESH_MARGIN) -> bool:
    """Whether a token expiring at `expires_at` (None: unknown) must be minted again before use."""
    return expires_at is None or expires_at - now < margin


def key_problem(pem: str) -> Optional[str]:
    """Why `pem` is not an App's private key (an RSA key in PEM, as GitHub hands it out), if it is not."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return "is not a PEM private key (GitHub's App settings > Private keys > Generate gives one)"
    if not isinstance(key, rsa.RSAPrivateKey):
        return "is not an RSA key; a GitHub App's private key is RSA"
    return None


def app_jwt(app: GitHubApp, now: float) -> str:
    """The JWT that authenticates as the App itself, signed with its key (RS256)."""
    key = serialization.load_pem_private_key(app.private_key.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)  # key_problem checked it when the config was read
    header = _part({"alg": "RS256", "typ": "JWT"})
    claims = _part({"iat": int(now) - CLOCK_SKEW, "exp": int(now) + JWT_LIFETIME, "iss": str(app.id)})
    signature = key.sign(f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{claims}.{_b64(signature)}"


# What a person does about each refusal of the mint, by HTTP status: the field to fix, and how.
MINT_HINTS = {
    401: ("forge.app.private_key", "GitHub did not take the App's JWT: the key is not the App's (or was revoked), "
          "forge.app.id names another App, or this machine's clock is off; generate a key in the App's settings "
          "and set it with `pulumi config set --secret {key} < app.pem`"),
    403: ("forge.app.installation", "the App may not mint tokens there (suspended installation?)"),
    404: ("forge.app.installation", "no installation {installation} of App {id}: install the App on the repository "
          "and name the number in its URL (github.com/settings/installations/<number>)"),
    422: ("forge.app.installation", "installation {installation} cannot reach {repository} or lacks the permissions "
          "{permissions}; add the repository to the installation, and grant them in the App's settings (Permissions: "
          "{names}, Read and write) and accept them on the installation"),
}


def mint(app: GitHubApp, forge: Forge, now: Optional[float] = None,
         permissions: Optional[dict[str, str]] = None) -> InstallationToken:
    """A fresh installation token for `forge.repository` alone, with `permissions` (PERMISSIONS:
    an agent's) alone."""
    permissions = PERMISSIONS if permissions is None else permissions
    now = time.time() if now is None else now
    client = ForgeClient(Forge("github", forge.api, forge.repository, app_jwt(app, now)),
                         token_field="forge.app.private_key")
    try:
        answer = client.mint_installation_token(app.installation, forge.repository.split("/")[1], permissions)
    except ForgeError as error:
        field_name, hint = MINT_HINTS.get(error.status, ("forge.app", ""))
        hint = hint.format(key=app.config_key, installation=app.installation, id=app.id, repository=forge.repository,
                           permissions=" and ".join(f"{name}: {level}" for name, level in permissions.items()),
                           names=", ".join(name.replace("_", " ").capitalize() for name in permissions))
        raise ForgeError(f'field "{field_name}": GitHub App {app.id} could not mint a token: {error}'
                         f"{f'; {hint}' if hint else ''}", error.status) from None
    return InstallationToken(answer["token"], parse_time(answer["expires_at"]))


def revoke(forge: Forge, token: str) -> None:
    """Ends a token before its hour is up; one already expired or revoked is fine."""
    client = ForgeClient(Forge("github", forge.api, forge.repository, token), token_field="forge.app")
    client.revoke_installation_token()


def parse_time(text: str) -> float:
    """GitHub's `2016-07-11T22:14:10Z` as seconds since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()


def _part(value: dict[str, object]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
