"""Run commands (git above all) in the agents of an agentfleet stack over their SSH endpoints.

The names below are imported on first use (PEP 562): `agentfleet exec` through a background
connection never imports paramiko, so the CLI starts in tens of milliseconds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The one version of agentfleet: the client, the provider plugin and its schema, and the package.
__version__ = "0.5.0"

_EXPORTS = {
    "AuditLog": "agentfleet.audit",
    "AuditRecord": "agentfleet.audit",
    "Connection": "agentfleet.connection",
    "AgentEndpoint": "agentfleet.endpoint",
    "Identity": "agentfleet.endpoint",
    "AgentfleetError": "agentfleet.errors",
    "AuditLogError": "agentfleet.errors",
    "AuthenticationFailed": "agentfleet.errors",
    "CommandTimeout": "agentfleet.errors",
    "HostKeyMismatch": "agentfleet.errors",
    "OutputsInvalid": "agentfleet.errors",
    "PulumiError": "agentfleet.errors",
    "StackNotFound": "agentfleet.errors",
    "UnknownAgent": "agentfleet.errors",
    "Unreachable": "agentfleet.errors",
    "UsageError": "agentfleet.errors",
    "Fleet": "agentfleet.fleet",
    "LocalGitFailed": "agentfleet.errors",
    "Overlaps": "agentfleet.overlaps",
    "AgentStatus": "agentfleet.status",
    "Result": "agentfleet.result",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from agentfleet.audit import AuditLog, AuditRecord
    from agentfleet.connection import Connection
    from agentfleet.endpoint import AgentEndpoint, Identity
    from agentfleet.errors import (
        AgentfleetError,
        AuditLogError,
        AuthenticationFailed,
        CommandTimeout,
        HostKeyMismatch,
        LocalGitFailed,
        OutputsInvalid,
        PulumiError,
        StackNotFound,
        UnknownAgent,
        Unreachable,
        UsageError,
    )
    from agentfleet.fleet import Fleet
    from agentfleet.overlaps import Overlaps
    from agentfleet.status import AgentStatus
    from agentfleet.result import Result


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentfleet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
