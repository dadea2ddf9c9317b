"""A fleet: the agents of one stack, each reached through its own reused connection."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from agentfleet.apptokens import TokenRefresh, refresh_from_outputs
from agentfleet.audit import AuditLog, audit_log_for
from agentfleet.connection import Connection
from agentfleet.endpoint import AgentEndpoint
from agentfleet.errors import AgentfleetError, UnknownAgent
from agentfleet.outputs import parse_outputs
from agentfleet.parallel import for_each
from agentfleet.result import Result
from agentfleet.retry import Backoff
from agentfleet.source import Source, resolve_source
from agentfleet.merges import ScratchRepository
from agentfleet.overlaps import Overlaps, predict
from agentfleet.throttle import ForgeGate, touches_forge
from agentfleet.status import STATUS_TIMEOUT, AgentStatus, parse_status, status_script, unreachable_status
from agentfleet.work import AgentWork, decode_history, history_script, parse_work, work_script

T = TypeVar("T")

FleetStream = Callable[[str, str, str], None]
"""Receives (agent name, "stdout" | "stderr", text) as each agent prints it."""
FleetRetryNotice = Callable[[str, int, str, float], None]
"""Receives (agent name, the attempt that failed, why, seconds until the next) before a retry."""


@dataclass(frozen=True)
class Fleet:
    """The agents of one stack (immutable) plus a cache of their open connections.

    Use it as a context manager, or call close(): connections open lazily on first use.
    With an audit log, every command run in an agent is recorded there.
    """

    name: str
    agents: Mapping[str, AgentEndpoint]
    connect_timeout: float = 10.0
    audit: AuditLog | None = None
    tokens: TokenRefresh | None = None  # agents pushing with GitHub App tokens (agentfleet/apptokens.py)
    _connections: dict[str, Connection] = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    _gate: ForgeGate | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One gate for the fleet's life, made before any thread asks: the stack's forge_connections
        # (every agent's output carries the same), None for outputs that predate it.
        limits = [agent.forge_connections for agent in self.agents.values() if agent.forge_connections]
        object.__setattr__(self, "_gate", ForgeGate(min(limits)) if limits else None)

    @classmethod
    def open(
        cls,
        stack: str | None = None,
        outputs: str | os.PathLike[str] | None = None,
        project_dir: str | os.PathLike[str] | None = None,
        *,
        connect_timeout: float = 10.0,
    ) -> Fleet:
        """Read a stack's outputs (or an outputs JSON file); see `resolve_source` for defaults."""
        return cls.from_source(resolve_source(stack, outputs, project_dir), connect_timeout=connect_timeout)

    @classmethod
    def from_source(
        cls, source: Source, environ: Mapping[str, str] | None = None, *, connect_timeout: float = 10.0
    ) -> Fleet:
        """The source's fleet, its commands recorded in the log `audit_log_for` picks."""
        audit = audit_log_for(source, os.environ if environ is None else environ)
        raw = source.read()
        return cls.from_outputs(raw, source.name, described=source.describe(), connect_timeout=connect_timeout,
                                audit=audit, tokens=refresh_from_outputs(raw, source.directory))

    @classmethod
    def from_outputs(
        cls,
        raw: object,
        name: str,
        *,
        described: str | None = None,
        connect_timeout: float = 10.0,
        audit: AuditLog | None = None,
        tokens: TokenRefresh | None = None,
    ) -> Fleet:
        """Build a fleet from decoded `pulumi stack output --json --show-secrets`."""
        agents = parse_outputs(raw, described or name)
        return cls(name, MappingProxyType(agents), connect_timeout, audit, tokens)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.agents)

    def endpoint(self, name: str) -> AgentEndpoint:
        try:
            return self.agents[name]
        except KeyError:
            raise UnknownAgent(name, self.agents) from None

    def agent(self, name: str) -> Connection:
        """The agent's connection, the same object on every call until close()."""
        endpoint = self.endpoint(name)
        with self._lock:
            if name not in self._connections:
                self._connections[name] = Connection(endpoint, self.connect_timeout, self.audit)
            return self._connections[name]

    def ready(self, name: str) -> Connection:
        """The agent's connection, its GitHub App token refreshed first when due: how a command
        the operator asks for (exec) reaches an agent."""
        connection = self.agent(name)
        if self.tokens is not None:
            self.tokens.before(connection)
        return connection

    def throttled(self, name: str, task: Callable[[], T]) -> T:
        """task() holding a slot of the agent's remote host, so the fleet's network git operations
        there stay within forge_connections (docs/configuration.md, "Gentle on the forge")."""
        if self._gate is None:
            return task()
        with self._gate.held(self.endpoint(name).forge_host):
            return task()

    def run_all(
        self,
        command: Sequence[str] | str,
        *,
        parallel: int = 4,
        cwd: str | None = None,
        timeout: float | None = None,
        stream: FleetStream | None = None,
        names: Iterable[str] | None = None,
        retries: int = 0,
        backoff: Backoff = Backoff(),
        on_retry: FleetRetryNotice | None = None,
    ) -> dict[str, Result | AgentfleetError]:
        """Run command on every agent (or on names), at most `parallel` at once; each agent
        retries a failure up to `retries` times on its own (see Connection.run). A git command
        that talks to the remote (touches_forge) also waits for a slot of the remote's host."""
        chosen = [self.endpoint(name).name for name in names] if names is not None else self.names

        def run_one(name: str) -> Result:
            forward = None if stream is None else (lambda which, text: stream(name, which, text))
            notice = None if on_retry is None else (lambda *failed: on_retry(name, *failed))
            return self.ready(name).run(command, cwd=cwd, timeout=timeout, stream=forward,
                                        retries=retries, backoff=backoff, on_retry=notice)

        if touches_forge(command):
            return for_each(chosen, lambda name: self.throttled(name, lambda: run_one(name)), parallel)
        return for_each(chosen, run_one, parallel)

    def status(self, *, parallel: int = 8, timeout: float = STATUS_TIMEOUT) -> tuple[AgentStatus, ...]:
        """Where every agent's work stands in git, one SSH command each; an agent that cannot
        be reached is a status with its error, so one dead agent hides nobody else."""
        return tuple(self._read_all(status_script, parse_status, parallel, timeout))

    def overlaps(self, *, parallel: int = 8, timeout: float = STATUS_TIMEOUT) -> Overlaps:
        """Which agents change the same files and whose changes would not merge, predicted by
        git merge-tree on this machine from each agent's work read over SSH (nothing is pushed)."""
        read = self._read_all(work_script, parse_work, parallel, timeout)
        works = [item for item in read if isinstance(item, AgentWork)]
        unread = [item for item in read if isinstance(item, AgentStatus)]
        with ScratchRepository() as scratch:
            copied, left_out = self._copy_work(scratch, works, timeout)
            return predict(copied, [*unread, *left_out], scratch.merge)

    def _read_all(
        self,
        script: Callable[[str | None], str],
        parse: Callable[[str, str, Result], T],
        parallel: int,
        timeout: float,
    ) -> list[T | AgentStatus]:
        """script(the agent's base) run in every agent, each output parsed; an agent not reached
        is its status. The scripts fetch the base: each holds a slot of its remote's host."""

        def read(name: str) -> Result:
            return self.throttled(name, lambda: self.agent(name).run(script(self.agents[name].base), timeout=timeout))

        outcomes = for_each(self.names, read, parallel)
        return [
            unreachable_status(name, self.agents[name].backend, outcome)
            if isinstance(outcome, AgentfleetError)
            else parse(name, self.agents[name].backend, outcome)
            for name, outcome in outcomes.items()
        ]

    def _copy_work(
        self, scratch: ScratchRepository, works: Sequence[AgentWork], timeout: float
    ) -> tuple[list[AgentWork], list[AgentStatus]]:
        """Each work into scratch, after its base's history (from the first agent that sends it:
        every pack leaves the base out); a work that cannot be copied is left out, saying why."""
        histories: set[str] = set()
        copied, left_out = [], []
        for work in works:
            try:
                if work.base_commit not in histories:
                    sent = self.agent(work.name).run(history_script(work.base_commit), timeout=timeout)
                    scratch.add_pack(decode_history(sent))
                    histories.add(work.base_commit)
                scratch.add_pack(work.pack)
                copied.append(work)
            except (AgentfleetError, ValueError) as error:
                problem = f"its work could not be copied to this machine: {error}"
                left_out.append(AgentStatus(work.name, self.agents[work.name].backend, True, problem))
        return copied, left_out

    def close(self) -> None:
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
        for connection in connections:
            connection.close()
