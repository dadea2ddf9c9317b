"""DeployKey: an agent's generated key registered on its forge repository, with write access.

Why a resource: the key lives exactly as long as the agent's key pair does. `pulumi up` registers
it before the agent's machine is made (so the first clone at boot finds it), every refresh reads
it back (a key deleted on the forge is gone from the state, and the same `up` registers it again),
and `pulumi destroy` or a replaced key pair removes it: no credential outlives its agent.

The API token is the resource's one secret input; it is also kept as a secret output because
read and delete get only the outputs, and the forge must be asked then too.
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi

from agentfleet.forge import Forge, ForgeClient, ForgeError, key_body
from components.reconciled import Driver, Reconciled
from components.spec import FleetSpec

TOKEN = "api_token"


def _client(fields: dict[str, Any], token: Optional[str]) -> ForgeClient:
    if not token:
        raise ForgeError(f"no API token for {fields['repository']}: set the stack's forge.token and run `pulumi up`")
    return ForgeClient(Forge(fields["kind"], fields["api"], fields["repository"], token))


class DeployKeyDriver(Driver):
    """The key on the forge; its numeric id there (`key_id`) is read back."""

    replacing = frozenset({"kind", "api", "repository", "title", "public_key", "read_only"})
    secret_input = "the forge's API token (it can manage the repository's deploy keys)"
    outputs = frozenset({"key_id", TOKEN})
    secret_outputs = frozenset({TOKEN})
    id_field = "title"

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        key = _client(fields, secret).add_deploy_key(fields["title"], fields["public_key"], fields["read_only"])
        return {"key_id": key.id, TOKEN: secret}

    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        key = _client(fields, fields.get(TOKEN)).deploy_key(fields["key_id"])
        if key is None or key.key != key_body(fields["public_key"]):
            return None  # deleted on the forge (or its id now holds another key): `up` registers it again
        return {"title": key.title, "read_only": key.read_only}

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        # Only the token changed (every other field replaces): keep it for the next read and delete.
        return {TOKEN: secret}

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        _client(fields, fields.get(TOKEN)).delete_deploy_key(fields["key_id"])


class DeployKey(Reconciled):
    """`public_key` registered on `forge` as `title`; `key_id` is the forge's id of it."""

    KIND = "DeployKey"
    key_id: pulumi.Output[int]

    def __init__(self, resource_name: str, forge: Forge, title: str, public_key: pulumi.Input[str],
                 opts: Optional[pulumi.ResourceOptions] = None) -> None:
        fields = {"kind": forge.kind, "api": forge.api, "repository": forge.repository, "title": title,
                  "public_key": public_key, "read_only": False}  # agents push their branches
        super().__init__(resource_name, fields, secret=forge.token, opts=pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=[TOKEN])))


def forge_problems(fleet: FleetSpec) -> list[str]:
    """What the forge would refuse at `up`, asked before anything is made: a token it does not
    take, a repository it does not have, a token that may not manage deploy keys there."""
    forge = fleet.forge
    if forge is None:
        return []
    where = f'stack "{fleet.stack}", field "forge'
    try:
        repository = ForgeClient(forge).repository()
    except ForgeError as error:
        return [f'{where}": {error}']
    registering = [agent.name for agent in fleet.agents if fleet.registers_key(agent)]
    if registering and not repository.admin:
        return [f'{where}.token": the token may not manage the deploy keys of {forge.repository} (agents '
                f'{", ".join(registering)} need theirs registered); use a token of an admin of the repository '
                "(GitHub: Administration: write; Gitea: an owner's token with scope write:repository)"]
    return []
