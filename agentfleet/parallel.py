"""Run one task per agent on a bounded thread pool; each agent's failure stays its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from agentfleet.errors import AgentfleetError

T = TypeVar("T")


def for_each(names: Sequence[str], task: Callable[[str], T], parallel: int) -> dict[str, T | AgentfleetError]:
    """task(name) for every name, at most `parallel` at once, results in the order of names.

    An AgentfleetError becomes that agent's result so one dead agent does not hide the
    others' results; any other exception is a bug and propagates.
    """
    if parallel < 1:
        raise ValueError(f"parallel must be at least 1, not {parallel}")
    pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, len(names))))
    try:
        futures = {name: pool.submit(_captured, task, name) for name in names}
        return {name: future.result() for name, future in futures.items()}
    finally:
        # On Ctrl-C, do not wait here: the caller closes the connections, which ends the tasks.
        pool.shutdown(wait=False, cancel_futures=True)


def _captured(task: Callable[[str], T], name: str) -> T | AgentfleetError:
    try:
        return task(name)
    except AgentfleetError as exc:
        return exc
