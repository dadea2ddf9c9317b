"""Where the provider's code and files are: the installed copy, else this checkout.

An installed agentfleet carries them under agentfleet/_program (setup.py copies components/,
cloud-init/, images/ and the image build script there, in the checkout's layout); run from a
checkout, they are the checkout itself. Either way nothing outside the installed package or the
checkout is read.
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
INSTALLED = PACKAGE / "_program"


def program_root() -> Path:
    return INSTALLED if INSTALLED.is_dir() else PACKAGE.parent


def importable() -> Path:
    """Put the provider's code (the package `components`) first on sys.path; returns its root."""
    root = program_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root
