"""Builds the one agentfleet distribution: the `agentfleet` package plus the code and files its
provider plugin runs, copied into the package as agentfleet/_program (see `PROGRAM`).

Why a copy and not top-level packages: the provider's code is the package `components`, a name
too common to install into a team's virtualenv; under agentfleet/_program it is importable only
where agentfleet.plugin puts it on sys.path (the provider plugin's own process). The layout under
_program is this checkout's, so the code finds cloud-init/ and images/ beside it as it does here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# What the provider plugin and `agentfleet image` read at run time, relative to the checkout.
PROGRAM = ("components", "cloud-init", "images", "scripts/lib/agent-image.sh", "scripts/lib/log.sh")


def program_files() -> list[Path]:
    files: list[Path] = []
    for entry in PROGRAM:
        path = ROOT / entry
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p for p in found if "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return files


class BuildWithProgram(build_py):
    """build_py, then the program's files into <build>/agentfleet/_program, modes kept."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "agentfleet" / "_program"
        shutil.rmtree(target, ignore_errors=True)  # a file gone from the checkout is gone from the wheel
        for source in program_files():
            destination = target / source.relative_to(ROOT)
            self.mkpath(str(destination.parent))
            self.copy_file(str(source), str(destination), preserve_mode=True)


setup(cmdclass={"build_py": BuildWithProgram})
