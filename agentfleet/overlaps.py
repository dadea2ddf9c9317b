"""Who changes what, and which of those changes would not merge: pure logic over agents' work.

Every agent's work is one commit (see agentfleet.work); each pair of agents, and each agent
against the current base, is merged with the `merge` function given (git merge-tree in a
scratch repository, see agentfleet.merges), so this module is tested without git or a fleet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

from agentfleet.merges import Merge
from agentfleet.status import AgentStatus
from agentfleet.work import AgentWork


@dataclass(frozen=True)
class AgentOverlap:
    """One agent's work: the paths it changes and whether it still merges into the base."""

    name: str
    commit: str
    paths: tuple[str, ...]
    merges_into_base: bool
    base_conflicts: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "commit": self.commit, "paths": list(self.paths),
                "merges_into_base": self.merges_into_base, "base_conflicts": list(self.base_conflicts)}


@dataclass(frozen=True)
class FileOverlap:
    """A path that two or more agents change."""

    path: str
    agents: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "agents": list(self.agents)}


@dataclass(frozen=True)
class PairOverlap:
    """Two agents' work merged with each other: the paths both change, and what conflicts."""

    agents: tuple[str, str]
    shared: tuple[str, ...]
    clean: bool
    conflicts: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"agents": list(self.agents), "shared": list(self.shared), "clean": self.clean,
                "conflicts": list(self.conflicts)}


@dataclass(frozen=True)
class Overlaps:
    """The fleet's overlaps against one base commit; unread are the agents whose work could not
    be read (unreachable, no repository, no base), each with its error, so none is silently left out."""

    base: str | None
    base_commit: str | None
    agents: tuple[AgentOverlap, ...]
    files: tuple[FileOverlap, ...]
    pairs: tuple[PairOverlap, ...]
    unread: tuple[AgentStatus, ...] = ()

    @property
    def conflicts(self) -> tuple[PairOverlap, ...]:
        return tuple(pair for pair in self.pairs if not pair.clean)

    @property
    def stale(self) -> tuple[AgentOverlap, ...]:
        """Agents whose work no longer merges cleanly into the base."""
        return tuple(agent for agent in self.agents if not agent.merges_into_base)

    @property
    def conflict_predicted(self) -> bool:
        return bool(self.conflicts or self.stale)

    def to_json(self) -> dict[str, object]:
        return {
            "base": self.base,
            "base_commit": self.base_commit,
            "conflict": self.conflict_predicted,
            "agents": [agent.to_json() for agent in self.agents],
            "files": [file.to_json() for file in self.files],
            "pairs": [pair.to_json() for pair in self.pairs],
            "unread": [{"name": status.name, "error": status.error} for status in self.unread],
        }


def current_base(works: Sequence[AgentWork]) -> str | None:
    """The base commit most agents fetched (the first agent's on a tie); None without work."""
    counted = Counter(work.base_commit for work in works)
    return max(counted, key=counted.__getitem__) if counted else None


def predict(works: Sequence[AgentWork], unread: Sequence[AgentStatus], merge: Callable[[str, str], Merge]) -> Overlaps:
    """Merge every pair of works and every work into the base commit most agents fetched."""
    base_commit = current_base(works)
    if base_commit is None:
        return Overlaps(None, None, (), (), (), tuple(unread))
    base = next(work.base for work in works if work.base_commit == base_commit)
    agents = tuple(_into_base(work, base_commit, merge) for work in works)
    changed_by: dict[str, list[str]] = {}
    for work in works:
        for path in work.paths:
            changed_by.setdefault(path, []).append(work.name)
    files = tuple(FileOverlap(path, tuple(names)) for path, names in sorted(changed_by.items()) if len(names) > 1)
    pairs = tuple(_pair(one, other, merge) for one, other in combinations(works, 2))
    return Overlaps(base, base_commit, agents, files, pairs, tuple(unread))


def _into_base(work: AgentWork, base_commit: str, merge: Callable[[str, str], Merge]) -> AgentOverlap:
    into = merge(base_commit, work.commit)
    return AgentOverlap(work.name, work.commit, tuple(sorted(work.paths)), into.clean, into.conflicts)


def _pair(one: AgentWork, other: AgentWork, merge: Callable[[str, str], Merge]) -> PairOverlap:
    merged = merge(one.commit, other.commit)
    shared = tuple(sorted(one.paths & other.paths))
    return PairOverlap((one.name, other.name), shared, merged.clean, merged.conflicts)
