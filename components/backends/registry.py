"""Which module drives which backend, and the preflight that checks them all before anything runs."""

from __future__ import annotations

import socket
from importlib import import_module
from types import ModuleType

from components.backends import MachineContext, docker
from components.egress import allowed_destinations
from components.spec import FleetSpec

MODULES = {
    "docker": "components.backends.docker",
    "lima": "components.backends.lima",
    "multipass": "components.backends.multipass",
}


def backend_module(backend: str) -> ModuleType:
    return import_module(MODULES[backend])


def preflight_problems(fleet: FleetSpec) -> list[str]:
    """What this machine lacks for the fleet: backends it cannot drive (naming the agents that
    need them), host ports already taken, and hosts a restricted egress policy cannot resolve."""
    problems = unresolvable_hosts(fleet)
    for backend in sorted(fleet.backends()):
        agents = [a for a in fleet.agents if a.backend == backend]
        names = ", ".join(a.name for a in agents)
        if backend not in MODULES:
            problems.append(
                f'stack "{fleet.stack}": backend {backend} (agents {names}) is not available in this '
                f'version of agentfleet (available: {", ".join(sorted(MODULES))})'
            )
            continue
        missing = backend_module(backend).missing_tools()
        if missing:
            problems.append(f'stack "{fleet.stack}": backend {backend} (agents {names}) needs {"; ".join(missing)}')
        elif backend == "docker":
            # Only Docker binds the host ports the spec chooses; VM backends forward their own.
            problems += docker.port_conflicts(agents, MachineContext(fleet.stack, fleet.attach_networks))
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
