"""Running a backend's command line tool: its output, or an error carrying the tail of it.

Why one function: limactl and multipass are driven the same way; secrets (cloud-configs) go on
stdin only, never in argv or the environment, and a failure must show what the tool said.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import NamedTuple, Optional

TAIL_LINES = 15


class Completed(NamedTuple):
    status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == 0


TIMED_OUT = 124
NOT_FOUND = 127


def run(argv: Sequence[str], stdin: Optional[str] = None, timeout_s: float = 120) -> Completed:
    """Run argv with stdin piped (or /dev/null); never raises for the tool's own failures."""
    pipe = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False, **pipe)
    except subprocess.TimeoutExpired as expired:
        said = _text(expired.stderr) or _text(expired.stdout)
        return Completed(TIMED_OUT, "", f"{said}\n`{' '.join(argv[:2])}` did not return within {timeout_s:g}s\n")
    except FileNotFoundError:
        return Completed(NOT_FOUND, "", f"{argv[0]} not found\n")
    return Completed(done.returncode, done.stdout, done.stderr)


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")
