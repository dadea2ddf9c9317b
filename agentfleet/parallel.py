"""Run one task per agent on a bounded number of threads; each agent's failure stays its own."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from agentfleet.errors import AgentfleetError

T = TypeVar("T")


def for_each(names: Sequence[str], task: Callable[[str], T], parallel: int) -> dict[str, T | AgentfleetError]:
    """task(name) for every name, at most `parallel` at once, results in the order of names.

    An AgentfleetError becomes that agent's result so one dead agent does not hide the
    others' results; any other exception is a bug and propagates.

    Why daemon threads and not a ThreadPoolExecutor: the interpreter joins an executor's workers
    when it exits, so Ctrl-C (or a dashboard's poller stopped mid-reading) would wait for every
    command in flight; the caller closes the connections, and nothing keeps the process alive.
    """
    if parallel < 1:
        raise ValueError(f"parallel must be at least 1, not {parallel}")
    queue = iter(names)
    taking = threading.Lock()
    results: dict[str, T | AgentfleetError] = {}
    bugs: list[BaseException] = []

    def work() -> None:
        """Take the next name until none is left: `parallel` of these, not one thread per agent."""
        while not bugs:
            with taking:
                name = next(queue, None)
            if name is None:
                return
            try:
                results[name] = _captured(task, name)
            except BaseException as bug:  # handed to the caller's thread below
                bugs.append(bug)

    workers = [threading.Thread(target=work, daemon=True, name="agentfleet-worker")
               for _ in range(max(1, min(parallel, len(names))))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if bugs:
        raise bugs[0]
    return {name: results[name] for name in names}


def _captured(task: Callable[[str], T], name: str) -> T | AgentfleetError:
    try:
        return task(name)
    except AgentfleetError as exc:
        return exc
