"""The value a remote command leaves behind."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    """What one command printed and how it ended.

    exit_status is -1 when the remote sent none (the command was killed by a signal).
    """

    command: str
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def tail(text: str, lines: int = 3) -> str:
    """The last non-blank lines of text on one line, for one-line error messages."""
    return " / ".join(_kept(text)[-lines:])


def head(text: str, lines: int = 2) -> str:
    """The first non-blank lines on one line: where git puts the cause, before its boilerplate."""
    return " / ".join(_kept(text)[:lines])


def _kept(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]
