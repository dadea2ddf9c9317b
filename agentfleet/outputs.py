"""Stack outputs -> validated AgentEndpoints; every broken field is reported in one error.

Collecting all problems (instead of stopping at the first) lets one `pulumi up` fix them all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from agentfleet.contract import BACKENDS, USER_NAMESPACES
from agentfleet.endpoint import AgentEndpoint, Identity
from agentfleet.errors import OutputsInvalid
from agentfleet.sshkeys import load_private_key, parse_known_hosts

HIDDEN_SECRET = "[secret]"  # what `pulumi stack output` prints without --show-secrets


def agent_order(name: str) -> list[Any]:
    """Sort key putting agent-2 before agent-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def parse_outputs(raw: object, source: str) -> dict[str, AgentEndpoint]:
    """Validate decoded outputs and build one endpoint per agent, ordered by name."""
    if not isinstance(raw, dict) or not isinstance(raw.get("agents"), dict):
        raise OutputsInvalid(source, ["there is no 'agents' object (has the stack been deployed?)"])
    keys = raw.get("agent_private_keys")
    problems: list[str] = []
    if not isinstance(keys, dict):
        state = "hidden ([secret])" if keys == HIDDEN_SECRET else "missing"
        problems.append(f"'agent_private_keys' is {state}; read the outputs with --show-secrets")
        keys = {}
    endpoints = {}
    for name in sorted(raw["agents"], key=agent_order):
        endpoint = _parse_agent(name, raw["agents"][name], keys.get(name), problems)
        if endpoint is not None:
            endpoints[name] = endpoint
    if problems:
        raise OutputsInvalid(source, problems)
    return endpoints


class _Fields:
    """Reads typed fields of one JSON object, recording a problem per bad field.

    A bad required field reads as "" or 0; the caller discards the agent when problems grew.
    """

    def __init__(self, where: str, data: object, problems: list[str]) -> None:
        self.where = where
        self.data: dict[str, Any] = data if isinstance(data, dict) else {}
        self.problems = problems
        if not isinstance(data, dict):
            problems.append(f"{where} is not an object")

    def text(self, key: str) -> str:
        value = self.data.get(key)
        if not isinstance(value, str) or not value:
            self._bad(key, "a non-empty string")
            return ""
        return value

    def nullable_text(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.text(key)

    def nullable_count(self, key: str, what: str = "a number of commits", least: int = 0) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            self._bad(key, what)
            return None
        return value

    def port(self, key: str) -> int:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            self._bad(key, "a port number")
            return 0
        return value

    def check(self, key: str, value: str, test: Callable[[str], str | None]) -> None:
        """Record test(value)'s complaint, if any, against key (a bad value is already recorded)."""
        complaint = test(value) if value else None
        if complaint:
            self.problems.append(f"{self.where}.{key} {complaint}")

    def _bad(self, key: str, expected: str) -> None:
        state = "is missing" if self.data.get(key) is None else f"must be {expected}"
        self.problems.append(f"{self.where}.{key} {state}")


def _parse_agent(name: str, data: object, private_key: object, problems: list[str]) -> AgentEndpoint | None:
    before = len(problems)
    fields = _Fields(f"agents.{name}", data, problems)
    identity = _Fields(f"agents.{name}.identity", fields.data.get("identity"), problems)
    # Outputs of a stack not brought up since forge_connections came have none: no limit.
    gate = _Fields(f"agents.{name}.forge_gate", fields.data.get("forge_gate") or {}, problems)
    endpoint = AgentEndpoint(
        name=name,
        backend=fields.text("backend"),
        host=fields.text("host"),
        port=fields.port("port"),
        user=fields.text("user"),
        known_hosts=fields.text("known_hosts"),
        identity=Identity(identity.text("name"), identity.text("email")),
        remote=fields.nullable_text("remote"),
        branch=fields.text("branch"),
        workspace=fields.nullable_text("workspace"),
        remote_public_key=fields.nullable_text("remote_public_key"),
        private_key=_private_key(name, private_key, problems),
        base=fields.nullable_text("base"),
        warn_behind=fields.nullable_count("warn_behind"),
        forge_host=gate.nullable_text("host"),
        forge_connections=gate.nullable_count("connections", "a number of connections", least=1),
        # Outputs of a stack not brought up (with --refresh) since it was read back have none.
        user_namespace=fields.nullable_text("user_namespace"),
    )
    fields.check("backend", endpoint.backend, _known_backend)
    fields.check("user_namespace", endpoint.user_namespace or "", _known_user_namespace)
    if endpoint.host and endpoint.port:
        fields.check("known_hosts", endpoint.known_hosts, lambda text: _pins(text, endpoint))
    return endpoint if len(problems) == before else None


def _known_backend(backend: str) -> str | None:
    return None if backend in BACKENDS else f"must be one of {BACKENDS}"


def _known_user_namespace(value: str) -> str | None:
    return None if value in USER_NAMESPACES else f"must be one of {USER_NAMESPACES}"


def _pins(known_hosts: str, endpoint: AgentEndpoint) -> str | None:
    """Complaint unless known_hosts is valid and pins a key for exactly this endpoint."""
    try:
        keys = parse_known_hosts(known_hosts)
    except ValueError as exc:
        return f"is not a known_hosts line: {exc}"
    name = endpoint.host_key_name
    return None if keys.lookup(name) else f"does not pin a key for {name}"


def _private_key(name: str, value: object, problems: list[str]) -> str:
    """The PEM if it is a usable key, else "" with the problem recorded."""
    where = f"agent_private_keys.{name}"
    if value is None:
        problems.append(f"{where} is missing")
    elif value == HIDDEN_SECRET:
        problems.append(f"{where} is hidden ({HIDDEN_SECRET}); read the outputs with --show-secrets")
    elif not isinstance(value, str):
        problems.append(f"{where} must be a string")
    else:
        try:
            load_private_key(value)
            return value
        except ValueError as exc:
            problems.append(f"{where} is {exc}")
    return ""
