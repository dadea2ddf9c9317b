"""What the stack says about one agent, as immutable values that turn into paramiko arguments."""

from __future__ import annotations

from dataclasses import dataclass, field

import paramiko

from agentfleet.sshkeys import host_key_name, load_private_key, parse_known_hosts


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
    base: str | None = None  # the fleet's base branch; None: the remote's default branch
    warn_behind: int | None = None  # commits the base may lag the remote before `exec` warns
    forge_host: str | None = None  # the remote's host, whose connections the fleet limits
    forge_connections: int | None = None  # at most this many network git operations there at once
    user_namespace: str | None = None  # contract.USER_NAMESPACES; None: not read back yet

    @property
    def address(self) -> str:
        """host:port, the way messages and `ls` show the endpoint."""
        return f"{self.host}:{self.port}"

    @property
    def host_key_name(self) -> str:
        """The name OpenSSH and paramiko look up in known_hosts for this endpoint."""
        return host_key_name(self.host, self.port)

    def host_keys(self) -> paramiko.HostKeys:
        """The pinned keys only: the sole source of trust for this endpoint."""
        return parse_known_hosts(self.known_hosts)

    def pkey(self) -> paramiko.PKey:
        return load_private_key(self.private_key)
