"""An agent's egress policy: which host:port pairs it may reach, as one document for every backend.

Why in the agent, applied by cloud-init: the same policy file and script work in a container and
in a VM; root applies the rules at every boot before sshd admits anyone, and the agent user, with
no capabilities and no way to gain them, can neither change the rules nor route around them.
"""

from __future__ import annotations

from components.spec import AgentSpec


def allowed_destinations(agent: AgentSpec) -> tuple[tuple[str, int], ...]:
    """The remote's host and port, then the `allow` entries, without repeats."""
    remote = [(agent.remote.host, agent.remote.port)] if agent.remote else []
    return tuple(dict.fromkeys([*remote, *agent.allow]))


def policy_document(agent: AgentSpec) -> str:
    """/etc/agentfleet/egress.conf: one `host port` per line, read by images/agentfleet/apply-egress."""
    return "".join(f"{host} {port}\n" for host, port in allowed_destinations(agent))
