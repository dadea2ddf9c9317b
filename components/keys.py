"""SshKeyPair: an ed25519 key generated once and kept only in Pulumi state, as a secret.

Why a resource and not a function: a key made on every run would change every agent on every
`pulumi up`. Generated at create time, it lives as long as the resource and is encrypted in
state by the stack's secrets provider.
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi

from components.reconciled import Driver, Reconciled


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


class KeyPairDriver(Driver):
    """The key lives in the state alone: made once, nothing to read back, change or remove."""

    replacing = frozenset({"comment"})
    outputs = frozenset({"private_key", "public_key"})
    secret_outputs = frozenset({"private_key"})
    id_field = "comment"

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        private, public = generate_ed25519(fields["comment"])
        return {"private_key": private, "public_key": public}

    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        return {}

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        return {}

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        return None


class SshKeyPair(Reconciled):
    """`private_key` is a secret output; `public_key` is plain."""

    KIND = "SshKeyPair"
    private_key: pulumi.Output[str]
    public_key: pulumi.Output[str]

    def __init__(self, resource_name: str, comment: str, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(resource_name, {"comment": comment}, opts=pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["private_key"])))
