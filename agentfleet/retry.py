"""When a failed command is tried again, and how long the client waits before each new attempt.

Why: hosted git services close connections under load, so a push of twenty agents at once can
fail for some of them and work a moment later. Retrying is asked for (`--retry N`,
`run(..., retries=N)`), never done by default: a command that failed is not always safe to
repeat. Waits double from `delay` up to `ceiling`, each shortened at random by up to half, so
agents that failed together do not all come back together.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from agentfleet.errors import Unreachable
from agentfleet.result import Result

RetryNotice = Callable[[int, str, float], None]
"""Receives (the attempt that failed, why, seconds until the next one) before each wait."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: about delay, 2 x delay, 4 x delay ... at most ceiling."""

    delay: float = 1.0
    ceiling: float = 30.0

    def wait(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt number failed_attempt (1 for the first)."""
        full = min(self.ceiling, self.delay * 2 ** (failed_attempt - 1))
        return full * random.uniform(0.5, 1.0)


def retry_reason(outcome: Result | Unreachable) -> str | None:
    """Why an attempt is worth repeating (a non-zero exit, a lost or refused connection), or None.

    Only these are retried: not a timeout (the command may still be running in the agent), nor a
    changed host key or a refused login (trying again cannot fix them).
    """
    if isinstance(outcome, Unreachable):
        return f"unreachable: {outcome.reason}"
    return None if outcome.ok else f"exit status {outcome.exit_status}"
