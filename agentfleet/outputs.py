"""Stack outputs -> validated AgentEndpoints; every broken field is reported in one error.

Collecting all problems (instead of stopping at the first) lets one `pulumi up` fix them all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from agentfleet.endpoint import (
    BACKENDS,
    AgentEndpoint,
    Identity,
    known_hosts_name,
    load_private_key,
    parse_known_hosts,
)
from agentfleet.errors import OutputsInvalid

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
    """Reads typed fields of one JSON object, recording a problem per bad field."""

    def __init__(self, where: str, data: object, problems: list[str]) -> None:
        self.where = where
        self.data = data if isinstance(data, dict) else {}
        self.problems = problems
        if not isinstance(data, dict):
            problems.append(f"{where} is not an object")

    def text(self, key: str, nullable: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not value:
            self._bad(key, "a non-empty string")
            return None
        return value

    def port(self, key: str) -> int | None:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            self._bad(key, "a port number")
            return None
        return value

    def check(self, key: str, value: str | None, test: Callable[[str], str | None]) -> None:
        """Record test(value)'s complaint, if any, against key."""
        complaint = test(value) if value is not None else None
        if complaint:
            self.problems.append(f"{self.where}.{key} {complaint}")

    def _bad(self, key: str, expected: str) -> None:
        state = "is missing" if self.data.get(key) is None else f"must be {expected}"
        self.problems.append(f"{self.where}.{key} {state}")


def _parse_agent(
    name: str, data: object, private_key: object, problems: list[str]
) -> AgentEndpoint | None:
    before = len(problems)
    fields = _Fields(f"agents.{name}", data, problems)
    backend = fields.text("backend")
    host, port, user = fields.text("host"), fields.port("port"), fields.text("user")
    known_hosts = fields.text("known_hosts")
    ident = _Fields(f"agents.{name}.identity", fields.data.get("identity"), problems)
    identity_name, identity_email = ident.text("name"), ident.text("email")
    remote = fields.text("remote", nullable=True)
    branch = fields.text("branch")
    workspace = fields.text("workspace", nullable=True)
    remote_public_key = fields.text("remote_public_key", nullable=True)
    fields.check("backend", backend, lambda b: None if b in BACKENDS else f"must be one of {BACKENDS}")
    if host is not None and port is not None:
        fields.check("known_hosts", known_hosts, lambda text: _pins(text, host, port))
    pem = _private_key(name, private_key, problems)
    if len(problems) > before:
        return None
    return AgentEndpoint(
        name=name,
        backend=backend,
        host=host,
        port=port,
        user=user,
        known_hosts=known_hosts,
        identity=Identity(identity_name, identity_email),
        remote=remote,
        branch=branch,
        workspace=workspace,
        remote_public_key=remote_public_key,
        private_key=pem,
    )  # type: ignore[arg-type]  # every None was recorded as a problem above


def _pins(known_hosts: str, host: str, port: int) -> str | None:
    """Complaint unless known_hosts is valid and pins a key for exactly this endpoint."""
    try:
        keys = parse_known_hosts(known_hosts)
    except ValueError as exc:
        return f"is not a known_hosts line: {exc}"
    name = known_hosts_name(host, port)
    return None if keys.lookup(name) else f"does not pin a key for {name}"


def _private_key(name: str, value: object, problems: list[str]) -> str | None:
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
        except ValueError as exc:
            problems.append(f"{where} is {exc}")
            return None
        return value
    return None
