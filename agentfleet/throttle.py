"""Gentle on the forge: at most N network git operations at once per remote host.

One ForgeGate per process holds a counting semaphore per remote host; whoever starts a network
git operation (a first clone, a fetch) holds a slot of that host for its duration. The Pulumi
provider holds one for the agents' first clones at boot (`held_for` a machine's `forge_gate`:
Docker from the clone's admission to its end, Lima while the document that clones is applied,
Multipass for its launch), the client one for its fleet-wide commands; see docs/configuration.md, "Gentle on the forge".
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

DEFAULT_FORGE_CONNECTIONS = 8

# git's subcommands that talk to a remote; `remote update` and `submodule update` too.
_NETWORK = frozenset({"fetch", "pull", "push", "clone", "ls-remote", "remote", "submodule"})
# Options before the subcommand that take a separate value (git -C dir fetch).
_VALUED = frozenset({"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path"})
_SHELL_GIT = re.compile(r"(?:^|[;&|(\s])git\s(?:[^;&|]*\s)?(?:" + "|".join(sorted(_NETWORK)) + r")(?:\s|$)")


class ForgeGate:
    """Counting semaphores by remote host, each `connections` wide; thread-safe."""

    def __init__(self, connections: int) -> None:
        if connections < 1:
            raise ValueError(f"connections must be at least 1, not {connections}")
        self.connections = connections
        self._lock = threading.Lock()
        self._hosts: dict[str, threading.BoundedSemaphore] = {}

    def _semaphore(self, host: str) -> threading.BoundedSemaphore:
        with self._lock:
            return self._hosts.setdefault(host, threading.BoundedSemaphore(self.connections))

    @contextmanager
    def held(self, host: str | None) -> Iterator[None]:
        """Hold one of host's slots for the block; None (no remote) holds nothing."""
        if host is None:
            yield
            return
        semaphore = self._semaphore(host)
        with semaphore:
            yield


def touches_forge(command: Sequence[str] | str) -> bool:
    """Whether a command for `exec --all` runs a git subcommand that talks to a remote.

    An argv is read exactly (git, its global options, the subcommand); a shell string by a
    pattern that finds `git ... fetch` anywhere in it, so it errs on the side of waiting.
    """
    if isinstance(command, str):
        return _SHELL_GIT.search(command) is not None
    words = list(command)
    if not words or words[0].rsplit("/", 1)[-1] != "git":
        return False
    index = 1
    while index < len(words) and words[index].startswith("-"):
        index += 2 if words[index] in _VALUED else 1
    return index < len(words) and words[index] in _NETWORK


_provider_lock = threading.Lock()
_provider_gates: dict[int, ForgeGate] = {}  # by limit: one per fleet's forge_connections, process-wide


@contextmanager
def held_for(gate: Mapping[str, object] | None) -> Iterator[None]:
    """Hold one slot of a machine's `forge_gate` (host, connections) for the block, in one gate
    per limit for the whole provider process: every first clone of the fleets it serves counts."""
    if not gate:
        yield
        return
    connections = int(str(gate["connections"]))
    with _provider_lock:
        forge = _provider_gates.setdefault(connections, ForgeGate(connections))
    with forge.held(str(gate["host"])):
        yield
