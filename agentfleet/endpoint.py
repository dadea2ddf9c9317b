"""What the stack says about one agent, as immutable values that turn into paramiko arguments."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import paramiko



def parse_known_hosts(text: str) -> paramiko.HostKeys:
    """Parse known_hosts lines; raise ValueError on any line that is not a usable host key."""
    keys = paramiko.HostKeys()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
        except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, ValueError) as exc:
            raise ValueError(f"bad key data in {line[:40]!r}…") from exc
        if entry is None:
            raise ValueError(f"not a known_hosts line of a supported key type: {line[:40]!r}…")
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    if not keys.keys():
        raise ValueError("no host key line")
    return keys


def load_private_key(pem: str) -> paramiko.PKey:
    """Parse an OpenSSH-format ed25519 private key; raise ValueError if it is not one."""
    try:
        return paramiko.Ed25519Key.from_private_key(io.StringIO(pem))
    except (paramiko.SSHException, ValueError) as exc:
        raise ValueError("not an unencrypted OpenSSH ed25519 private key") from exc


@dataclass(frozen=True)
class Identity:
    """The git author identity cloud-init configured on the agent."""

    name: str
    email: str

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


@dataclass(frozen=True)
class AgentEndpoint:
    """One agent's SSH endpoint and git setup, exactly as the stack outputs describe it."""

    name: str
    backend: str
    host: str
    port: int
    user: str
    known_hosts: str
    identity: Identity
    remote: str | None
    branch: str
    workspace: str | None
    remote_public_key: str | None
    private_key: str = field(repr=False)

    @property
    def address(self) -> str:
        """host:port, the way messages and `ls` show the endpoint."""
        return f"{self.host}:{self.port}"

    @property
    def host_key_name(self) -> str:
        """The name OpenSSH and paramiko look up in known_hosts for this endpoint."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def host_keys(self) -> paramiko.HostKeys:
        """The pinned keys only: the sole source of trust for this endpoint."""
        return parse_known_hosts(self.known_hosts)

    def pkey(self) -> paramiko.PKey:
        return load_private_key(self.private_key)
