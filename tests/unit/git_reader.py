"""Read a rendered gitconfig the way git does: the real `git config` and `git var` on a temp file."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path


def _git(content: str, *args: str) -> str:
    with tempfile.TemporaryDirectory() as home:
        config = Path(home) / ".gitconfig"
        config.write_text(content, encoding="utf-8")
        env = {"PATH": os.environ["PATH"], "HOME": home, "GIT_CONFIG_GLOBAL": str(config),
               "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}
        done = subprocess.run(["git", *args], env=env, cwd=home, capture_output=True, check=True)
        return done.stdout.decode("utf-8")


def git_config(content: str) -> dict[str, str]:
    """Every key and value git reads from content (`git config --list -z`)."""
    entries = _git(content, "config", "--global", "--list", "-z").split("\0")[:-1]
    return dict(entry.split("\n", 1) for entry in entries)


def git_author(content: str) -> tuple[str, str]:
    """The author name and email git would write into a commit made with this config."""
    ident = _git(content, "var", "GIT_AUTHOR_IDENT").rstrip("\n")
    name_email = ident.rsplit(" ", 2)[0]  # drop the timestamp and time zone
    name, _, email = name_email.rpartition(" <")
    return name, email[:-1]
