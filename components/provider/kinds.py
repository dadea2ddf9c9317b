"""The kinds of resource agentfleet's provider serves, each with the driver that makes it live
and what a user reads of it in the schema. One table: the provider, the schema and the program's
resource classes (their KIND) all go by it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import import_module

from components.reconciled import Driver


@dataclass(frozen=True)
class Kind:
    driver: str  # "module:Class"
    description: str


KINDS: dict[str, Kind] = {
    "SshKeyPair": Kind("components.keys:KeyPairDriver",
                       "An ed25519 key pair made once; the private key is kept only as a secret output."),
    "DeployKey": Kind("components.deploykey:DeployKeyDriver",
                      "An agent's generated public key registered as a write deploy key on its forge repository "
                      "(GitHub or Gitea), or with `owner` as that forge user's SSH key; the API token is a secret "
                      "input."),
    "AppToken": Kind("components.apptoken:AppTokenDriver",
                     "A GitHub App installation token minted for one agent (one repository; contents and pull "
                     "requests: write), minted again by the refresh before it expires and revoked at delete; the "
                     "App's private key is a secret input."),
    "DockerContainer": Kind("components.backends.docker.driver:ContainerDriver",
                            "An agent's container on a Docker engine (local or reached over SSH), its sshd published "
                            "on a port kept for its life."),
    "DockerVolume": Kind("components.backends.docker.driver:VolumeDriver",
                         "An agent's workspace: a named volume that outlives its container."),
    "DockerPool": Kind("components.backends.docker.pool_driver:PoolDriver",
                       "A Docker host's warm pool: `size` agents booted with no identity, which new agents claim; "
                       "refresh reads the healthy members, up boots the missing ones."),
    "DockerNetwork": Kind("components.backends.docker.driver:NetworkDriver",
                          "The stack's bridge network on one Docker engine."),
    "DockerImage": Kind("components.backends.docker.driver:ImageDriver",
                        "The agent image on a remote engine, sent from the local one (no registry needed)."),
    "SharedObjects": Kind("components.backends.docker.driver:MirrorDriver",
                          "A mirror of the fleet's remote on one engine, mounted read-only as agents' git alternates."),
    "LimaVm": Kind("components.backends.lima.driver:VmDriver", "An agent's Lima VM; its disk holds the workspace."),
    "MultipassVm": Kind("components.backends.multipass.driver:VmDriver",
                        "An agent's Multipass VM; its disk holds the workspace."),
}


@cache
def driver(kind: str) -> Driver:
    """The driver of a kind (a resource type's last part)."""
    module, name = KINDS[kind].driver.split(":")
    return getattr(import_module(module), name)()
