"""STAND-IN commands for tests of shell steps, and a PATH the test controls.

A test that depends on whether this machine has Go, Multipass or internet access proves nothing
on the next machine. These put a test's own small scripts first on PATH and can leave chosen
system commands out of it, whatever the machine has installed.
"""

from __future__ import annotations

import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PULUMI_VERSION = re.search(r"^PULUMI_VERSION=(\S+)$", (PROJECT_ROOT / "scripts/lib/pulumi-toolchain.sh").read_text(),
                           re.M).group(1)
SYSTEM_DIRS = (Path("/usr/bin"), Path("/bin"), Path("/usr/sbin"), Path("/sbin"))


def write_stand_in(directory: Path, name: str, body: str) -> Path:
    """An executable `name` in `directory` running `body` with sh."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n# STAND-IN for {name}, written by a test\n{body}")
    path.chmod(0o755)
    return path


def tools_path(tmp_path: Path, first: Path, without: tuple[str, ...] = ()) -> str:
    """PATH: `first` (the stand-ins), then the system's commands but those in `without`, which
    stay absent even where the system has them (links in a directory of the test's own)."""
    first.mkdir(parents=True, exist_ok=True)
    if not without:
        return ":".join(map(str, (first, *SYSTEM_DIRS)))
    system = tmp_path / "system-bin"
    system.mkdir()
    for directory in SYSTEM_DIRS:
        for command in directory.iterdir():
            link = system / command.name
            if command.name not in without and not link.exists():
                link.symlink_to(command)
    return f"{first}:{system}"
