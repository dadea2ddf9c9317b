"""SshKeyPair: an ed25519 key generated once and kept only in Pulumi state, as a secret.

Why a resource and not a function: a key made on every run would change every agent on every
`pulumi up`. Generated at create time, it lives as long as the resource and is encrypted in
state by the stack's secrets provider.
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider


def generate_ed25519(comment: str) -> tuple[str, str]:
    """Return (OpenSSH private key, `ssh-ed25519 AAAA… comment` public key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    return private, f"{public} {comment}"


class SshKeyPairProvider(ResourceProvider):
    serialize_as_secret_always = False  # pickled by reference: a module path, nothing secret

    def create(self, props: dict[str, Any]) -> CreateResult:
        private, public = generate_ed25519(props["comment"])
        return CreateResult(
            id_=props["comment"], outs={**props, "private_key": private, "public_key": public}
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = olds.get("comment") != news.get("comment")
        return DiffResult(changes=changed, replaces=["comment"] if changed else [])


class SshKeyPair(Resource, module="agentfleet", name="SshKeyPair"):
    """`private_key` is a secret output; `public_key` is plain."""

    private_key: pulumi.Output[str]
    public_key: pulumi.Output[str]

    def __init__(self, resource_name: str, comment: str, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(
            SshKeyPairProvider(),
            resource_name,
            {"comment": comment, "private_key": None, "public_key": None},
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(additional_secret_outputs=["private_key"])
            ),
        )
