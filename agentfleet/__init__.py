"""Run commands (git above all) in the agents of an agentfleet stack over their SSH endpoints."""

from agentfleet.audit import AuditLog, AuditRecord
from agentfleet.connection import Connection
from agentfleet.endpoint import AgentEndpoint, Identity
from agentfleet.errors import (
    AgentfleetError,
    AuditLogError,
    AuthenticationFailed,
    CommandTimeout,
    HostKeyMismatch,
    OutputsInvalid,
    PulumiError,
    StackNotFound,
    UnknownAgent,
    Unreachable,
    UsageError,
)
from agentfleet.fleet import Fleet
from agentfleet.result import Result

__all__ = [
    "AgentEndpoint",
    "AgentfleetError",
    "AuditLog",
    "AuditLogError",
    "AuditRecord",
    "AuthenticationFailed",
    "CommandTimeout",
    "Connection",
    "Fleet",
    "HostKeyMismatch",
    "Identity",
    "OutputsInvalid",
    "PulumiError",
    "Result",
    "StackNotFound",
    "UnknownAgent",
    "Unreachable",
    "UsageError",
]
