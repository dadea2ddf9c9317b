"""Which module drives which backend, and the preflight that checks them all before anything runs."""

from __future__ import annotations

import socket
from importlib import import_module

from components.backends import Backend
from components.egress import allowed_destinations
from components.spec import FleetSpec

MODULES = {
    "docker": "components.backends.docker",
    "lima": "components.backends.lima",
    "multipass": "components.backends.multipass",
}


def backend(name: str) -> Backend:
    return import_module(MODULES[name]).BACKEND


def preflight_problems(fleet: FleetSpec) -> list[str]:
    """What this machine lacks for the fleet: backends it cannot drive (naming the agents that
    need them), then each backend's own checks (ports taken, ...), and hosts a restricted egress
    policy cannot resolve."""
    problems = unresolvable_hosts(fleet)
    for name in sorted(fleet.backends()):
        agents = [a for a in fleet.agents if a.backend == name]
        names = ", ".join(a.name for a in agents)
        if name not in MODULES:
            problems.append(
                f'stack "{fleet.stack}": backend {name} (agents {names}) is not available in this '
                f'version of agentfleet (available: {", ".join(sorted(MODULES))})'
            )
            continue
        missing = backend(name).missing_tools()
        if missing:
            problems.append(f'stack "{fleet.stack}": backend {name} (agents {names}) needs {"; ".join(missing)}')
        else:
            problems += backend(name).preflight(fleet, agents)
    return problems


def unresolvable_hosts(fleet: FleetSpec) -> list[str]:
    problems = []
    for agent in fleet.agents:
        if agent.egress != "restricted":
            continue
        for host, _ in allowed_destinations(agent):
            try:
                socket.getaddrinfo(host, None)
            except (socket.gaierror, UnicodeError):
                problems.append(
                    f'stack "{fleet.stack}", agent "{agent.name}": host {host} (remote or allow) cannot be '
                    "resolved from this machine; fix the name or DNS (the egress policy needs its "
                    "addresses), or set `egress: open`"
                )
    return problems
