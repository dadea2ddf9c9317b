"""Real git repositories in a temp directory standing in for an agent's clone and its remote:
the in-agent scripts run against them with `sh`, as sshd would run them, without a machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from agentfleet.result import Result

ENV = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C",
       "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
       "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def git(where: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(where), *args], env=ENV, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def run_script(script: str, where: Path) -> Result:
    """script run by `sh` in where, as the agent's login shell runs it."""
    done = subprocess.run(["sh", "-c", script], cwd=where, env=ENV, capture_output=True, text=True)
    return Result(script, done.returncode, done.stdout, done.stderr)


def remote_with_main(root: Path, files: dict[str, str]) -> Path:
    """A bare repository whose default branch main holds files in one commit."""
    remote = root / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], env=ENV, check=True)
    seed = clone(remote, root / "seed")
    commit(seed, files, "initial commit")
    git(seed, "push", "-q", "origin", "HEAD:main")
    return remote


def clone(remote: Path, where: Path, branch: str | None = None) -> Path:
    subprocess.run(["git", "clone", "-q", str(remote), str(where)], env=ENV, check=True, capture_output=True)
    if branch:
        git(where, "checkout", "-q", "-b", branch)
    return where


def commit(where: Path, files: dict[str, str], message: str) -> str:
    """Write files, commit them, and return the new commit."""
    for name, text in files.items():
        (where / name).write_text(text)
    git(where, "add", *files)
    git(where, "commit", "-q", "-m", message)
    return git(where, "rev-parse", "HEAD")
