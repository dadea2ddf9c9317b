"""AppToken: a GitHub App installation token minted for one agent, what its https remote is
pushed to with.

Why a resource: the agent's first clone at boot needs a token in its cloud-config, so `pulumi up`
mints one before the machine is made, and keeps it as a secret output (an hour long, for one
repository). Every refresh (the project's `refresh: always`) reads it back as gone when fewer than
REFRESH_MARGIN are left, so the same `up` mints a fresh one and the agent's credential file is
rewritten in place (components/reapply.py); `pulumi destroy` revokes it. Between `up`s,
`agentfleet exec` refreshes the agent's token itself (agentfleet/apptokens.py).

The App's private key is the resource's one secret input: it signs the JWT here, in agentfleet's
provider on the operator's machine, and never reaches an agent.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import pulumi

from agentfleet.forge import Forge, ForgeError
from agentfleet.githubapp import GitHubApp, mint, revoke, token_due
from components.reconciled import Driver, Reconciled

TOKEN = "token"


def _app(fields: dict[str, Any], key: Optional[str]) -> GitHubApp:
    if not key:
        raise ForgeError(f"no GitHub App key for {fields['repository']}: set the stack's forge.app.private_key "
                         "and run `pulumi up`")
    return GitHubApp(int(fields["app_id"]), int(fields["installation"]), "forge.app.private_key", key)


def _forge(fields: dict[str, Any]) -> Forge:
    return Forge("github", fields["api"], fields["repository"], "")


class AppTokenDriver(Driver):
    """The token on GitHub, known by its expiry (`expires_at`, seconds since the epoch)."""

    replacing = frozenset({"api", "repository", "app_id", "installation", "agent"})
    secret_input = "the GitHub App's private key (PEM): it signs the JWT that mints the token"
    outputs = frozenset({TOKEN, "expires_at"})
    secret_outputs = frozenset({TOKEN})
    id_field = "agent"

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        token = mint(_app(fields, secret), _forge(fields))
        return {TOKEN: token.token, "expires_at": token.expires_at}

    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        if token_due(fields.get("expires_at"), time.time()):
            return None  # about to expire: `up` mints the agent a fresh one
        return {}

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        return self.create(name, fields, secret)  # a new App key: prove it with a token it mints

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        if fields.get(TOKEN):
            revoke(_forge(fields), fields[TOKEN])


class AppToken(Reconciled):
    """An installation token of `app` for `forge.repository`, minted for agent `agent`."""

    KIND = "AppToken"
    token: pulumi.Output[str]
    expires_at: pulumi.Output[float]  # seconds since the epoch; `exec` compares it with its own record

    def __init__(self, resource_name: str, forge: Forge, app: GitHubApp, agent: str,
                 opts: Optional[pulumi.ResourceOptions] = None) -> None:
        fields = {"api": forge.api, "repository": forge.repository, "app_id": app.id,
                  "installation": app.installation, "agent": agent}
        super().__init__(resource_name, fields, secret=app.private_key,
                         opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=[TOKEN])))
