"""The operator's scratch repository: the agents' work side by side, merged by git itself.

`git merge-tree --write-tree` (git 2.38) runs a real merge, renames and all, without a worktree
or an index, and writes only objects; the repository is a temporary bare one that goes away
with close(), so nothing of the operator's own clones is touched.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass

from agentfleet.errors import LocalGitFailed

CLEAN, CONFLICTED = 0, 1  # merge-tree's exit statuses; anything else is an error


@dataclass(frozen=True)
class Merge:
    """What merging two commits would give: clean, or the paths left in conflict."""

    clean: bool
    conflicts: tuple[str, ...] = ()


class ScratchRepository:
    """A temporary bare repository; a context manager, and close() is safe twice."""

    def __init__(self) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="agentfleet-overlaps-")
        self.path = self._directory.name
        try:
            self._git("init", "-q", "--bare")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ScratchRepository:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._directory.cleanup()

    def add_pack(self, pack: bytes) -> None:
        """Store a pack's objects (a self-contained one: `pack-objects` without --thin)."""
        self._git("index-pack", "--stdin", input=pack)

    def merge(self, ours: str, theirs: str) -> Merge:
        """Merge the two commits as `git merge` would, from their merge base."""
        done = self._run("merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", ours, theirs)
        # -z: the merged tree, then each conflicted path (once per stage), each ended by NUL.
        # git 2.39 exits 1 for a commit it cannot find too, then printing no tree.
        tree, *paths = done.stdout.decode("utf-8", "replace").split("\0")
        if done.returncode not in (CLEAN, CONFLICTED) or not tree:
            raise self._failed(done, "merge-tree", ours, theirs)
        return Merge(done.returncode == CLEAN, tuple(sorted(set(filter(None, paths)))))

    def _git(self, *args: str, input: bytes | None = None) -> None:
        done = self._run(*args, input=input)
        if done.returncode != 0:
            raise self._failed(done, *args)

    def _run(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """git without the operator's configuration, whose merge settings would bend the answer."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_CONFIG_GLOBAL": os.devnull}
        try:
            return subprocess.run(["git", "-C", self.path, *args], input=input, capture_output=True, env=env)
        except FileNotFoundError as exc:
            raise LocalGitFailed(f"git {args[0]}", "no git") from exc

    @staticmethod
    def _failed(done: subprocess.CompletedProcess[bytes], *args: str) -> LocalGitFailed:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return LocalGitFailed("git " + " ".join(args[:3]), said[0] if said else f"exit status {done.returncode}")
