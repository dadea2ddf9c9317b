"""Which module drives which backend, and the preflight that checks them all before anything runs."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from components.spec import FleetSpec

MODULES = {
    "docker": "components.backends.docker",
    "multipass": "components.backends.multipass",
}


def backend_module(backend: str) -> ModuleType:
    return import_module(MODULES[backend])


def preflight_problems(fleet: FleetSpec) -> list[str]:
    """One line per backend this machine cannot drive, naming the agents that need it."""
    problems = []
    for backend in sorted(fleet.backends()):
        agents = ", ".join(a.name for a in fleet.agents if a.backend == backend)
        if backend not in MODULES:
            problems.append(
                f'stack "{fleet.stack}": backend {backend} (agents {agents}) is not available in this '
                f'version of agentfleet (available: {", ".join(sorted(MODULES))})'
            )
            continue
        missing = backend_module(backend).missing_tools()
        if missing:
            problems.append(
                f'stack "{fleet.stack}": backend {backend} (agents {agents}) needs {"; ".join(missing)}'
            )
    return problems
