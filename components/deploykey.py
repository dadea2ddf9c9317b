"""DeployKey: an agent's generated key registered on its forge repository, with write access, or
as the SSH key of the agent's forge user (`owner`), so the forge shows its pushes as that user's.

Why a resource: the key lives exactly as long as the agent's key pair does. `pulumi up` registers
it before the agent's machine is made (so the first clone at boot finds it), every refresh reads
it back (a key deleted on the forge is gone from the state, and the same `up` registers it again),
and `pulumi destroy` or a replaced key pair removes it: no credential outlives its agent.

The API token is the resource's one secret input (the fleet's token for a deploy key, the forge
user's own token for a user key); it is also kept as a secret output because read and delete get
only the outputs, and the forge must be asked then too.
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi

from agentfleet.forge import DeployKey as Key
from agentfleet.forge import Forge, ForgeClient, ForgeError, key_body
from components.reconciled import Driver, Reconciled
from components.spec import AgentSpec, FleetSpec, ForgeUser

TOKEN = "api_token"
OWNER = "owner"  # the forge user whose SSH key it is; None: a deploy key of the repository


def _client(fields: dict[str, Any], token: Optional[str]) -> ForgeClient:
    field = "forge.token" if fields.get(OWNER) is None else "forge_user.token"
    if not token:
        raise ForgeError(f"no API token for {fields['repository']}: set the stack's {field} and run `pulumi up`")
    return ForgeClient(Forge(fields["kind"], fields["api"], fields["repository"], token), token_field=field)


class DeployKeyDriver(Driver):
    """The key on the forge; its numeric id there (`key_id`) is read back. Resources made before
    forge users existed have no `owner`: they are deploy keys."""

    replacing = frozenset({"kind", "api", "repository", "title", "public_key", "read_only", OWNER})
    secret_input = ("the forge's API token (it can manage the repository's deploy keys or, with `owner`, "
                    "that user's own SSH keys)")
    outputs = frozenset({"key_id", TOKEN})
    secret_outputs = frozenset({TOKEN})
    id_field = "title"

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        client = _client(fields, secret)
        key = (client.add_deploy_key(fields["title"], fields["public_key"], fields["read_only"])
               if fields.get(OWNER) is None else client.add_user_key(fields["title"], fields["public_key"]))
        return {"key_id": key.id, TOKEN: secret}

    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        client = _client(fields, fields.get(TOKEN))
        key: Optional[Key] = (client.deploy_key(fields["key_id"]) if fields.get(OWNER) is None
                              else client.user_key(fields["key_id"]))
        if key is None or key.key != key_body(fields["public_key"]):
            return None  # deleted on the forge (or its id now holds another key): `up` registers it again
        return {"title": key.title, "read_only": key.read_only}

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        # Only the token changed (every other field replaces): keep it for the next read and delete.
        return {TOKEN: secret}

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        client = _client(fields, fields.get(TOKEN))
        if fields.get(OWNER) is None:
            client.delete_deploy_key(fields["key_id"])
        else:
            client.delete_user_key(fields["key_id"])


class DeployKey(Reconciled):
    """`public_key` registered on `forge` as `title` (a deploy key of the repository, or, with
    `owner`, that forge user's SSH key); `key_id` is the forge's id of it."""

    KIND = "DeployKey"
    key_id: pulumi.Output[int]

    def __init__(self, resource_name: str, forge: Forge, title: str, public_key: pulumi.Input[str],
                 opts: Optional[pulumi.ResourceOptions] = None, owner: Optional[ForgeUser] = None) -> None:
        fields = {"kind": forge.kind, "api": forge.api, "repository": forge.repository, "title": title,
                  "public_key": public_key, "read_only": False,  # agents push their branches
                  OWNER: owner.name if owner else None}
        super().__init__(resource_name, fields, secret=owner.token if owner else forge.token,
                         opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=[TOKEN])))


def forge_problems(fleet: FleetSpec) -> list[str]:
    """What the forge would refuse at `up`, asked before anything is made: a token it does not
    take, a repository it does not have, a token that may not manage deploy keys there."""
    forge = fleet.forge
    if forge is None:
        return []
    where = f'stack "{fleet.stack}", field "forge'
    if not forge.token:  # a GitHub App's fleet: its tokens are minted, and refusals named, at `up`
        return _users_problems(fleet)
    try:
        repository = ForgeClient(forge).repository()
    except ForgeError as error:
        return [f'{where}": {error}']
    registering = [agent.name for agent in fleet.agents if fleet.registers_key(agent) and agent.forge_user is None]
    if registering and not repository.admin:
        return [f'{where}.token": the token may not manage the deploy keys of {forge.repository} (agents '
                f'{", ".join(registering)} need theirs registered); use a token of an admin of the repository '
                "(GitHub: Administration: write; Gitea: an owner's token with scope write:repository)"]
    return _users_problems(fleet)


def _users_problems(fleet: FleetSpec) -> list[str]:
    return [problem for agent in fleet.agents if agent.forge_user is not None
            for problem in _forge_user_problems(fleet, agent, agent.forge_user)]


def _forge_user_problems(fleet: FleetSpec, agent: AgentSpec, user: ForgeUser) -> list[str]:
    """Asked with the user's own token: that it is the named user's, and that the user may push."""
    assert fleet.forge is not None
    where = f'stack "{fleet.stack}", agent "{agent.name}", field "forge_user'
    client = ForgeClient(Forge(fleet.forge.kind, fleet.forge.api, fleet.forge.repository, user.token),
                         token_field="forge_user.token")
    try:
        login = client.login()
        if login.lower() != user.name.lower():
            return [f'{where}.token": config key {user.config_key} holds a token of {login!r}, not of '
                    f"{user.name!r}; set {user.name}'s token there (or name {login} in forge_user.name)"]
        push = client.repository().push
    except ForgeError as error:
        if error.status != 404:
            return [f'{where}.token": {error}']
        push = False  # the user cannot even see the repository
    if not push:
        return [f'{where}.name": {user.name} may not push to {fleet.forge.repository}; give it write access '
                "(a collaborator with Write, or a team that has it: GitHub Settings > Collaborators and teams, "
                "Gitea Settings > Collaborators) or name a user who has it"]
    return []
