"""Host paths that several parts of one test run change: each part undoes only what it made.

Why: the Kubernetes test cluster makes /run/netns (a mount point for its own namespace's copy)
when the host has none, and the remote-host rig's `ip netns add` makes /run/netns a mount point
(it bind-mounts the directory onto itself). Whichever comes first, the cluster's `rmdir` fails
with EBUSY while the rig's mount sits on its directory. So each change is recorded with the part
that made it, and a part that is done undoes its changes once no change of a part still running
sits on top of them (the directory goes after the mount on it); the last part out leaves the
path as the run found it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def is_mount_point(path: Path) -> bool:
    """Whether something is mounted on `path`. Not os.path.ismount, which compares devices and
    so misses a directory bind-mounted onto itself (what `ip netns add` makes of /run/netns)."""
    points = (line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
    return str(path.absolute()) in {point.replace("\\040", " ") for point in points}


def _remove_directory(path: Path) -> None:
    if path.is_dir() and not is_mount_point(path) and not any(path.iterdir()):
        path.rmdir()


def _unmount(path: Path) -> None:
    if is_mount_point(path):
        subprocess.run(["umount", str(path)], check=True, capture_output=True)


@dataclass
class _Change:
    owner: object
    undo: Callable[[Path], None]
    done: bool = False


class SharedPaths:
    """The changes parts of this process made to shared host paths, oldest first per path."""

    def __init__(self) -> None:
        self._changes: dict[Path, list[_Change]] = {}

    @contextmanager
    def changing(self, owner: object, path: Path) -> Iterator[None]:
        """Records what happens to `path` inside the block (it appears, a mount is put on it) as
        `owner`'s to undo, whether the block or a tool it runs does it."""
        existed, mounted = path.exists(), is_mount_point(path)
        try:
            yield
        finally:
            changes = self._changes.setdefault(path, [])
            if not existed and path.exists():
                changes.append(_Change(owner, _remove_directory))
            if not mounted and is_mount_point(path):
                changes.append(_Change(owner, _unmount))

    def release(self, owner: object) -> None:
        """`owner` is done: undo its changes, newest first, as far as no later change of a part
        still running sits on them; undo changes of parts done before that were waiting on it."""
        for path, changes in self._changes.items():
            for change in changes:
                if change.owner is owner:
                    change.done = True
            while changes and changes[-1].done:
                changes.pop().undo(path)

    def pending(self) -> dict[Path, list[object]]:
        """Paths with changes not undone yet, and whose they are."""
        return {path: [c.owner for c in changes] for path, changes in self._changes.items() if changes}


SHARED_PATHS = SharedPaths()
"""The one registry of this test process: the cluster and the rig both record in it."""
