"""Which module drives which backend, and the preflight that checks them all before anything runs."""

from __future__ import annotations

from importlib import import_module

from components.backends import Backend
from components.spec import FleetSpec

MODULES = {
    "docker": "components.backends.docker.backend",
    "lima": "components.backends.lima.backend",
    "multipass": "components.backends.multipass.backend",
    "kubernetes": "components.backends.kubernetes.backend",
}


def backend(name: str) -> Backend:
    return import_module(MODULES[name]).BACKEND


def preflight_problems(fleet: FleetSpec) -> list[str]:
    """What this machine lacks for the fleet: backends it cannot drive (naming the agents that
    need them), then each backend's own checks (ports taken, ...). Names in an egress policy are
    not checked here: the agent resolves them, through its own DNS servers (`dns`)."""
    problems: list[str] = []
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
