"""`agentfleet image`: build the agent image from the recipe this agentfleet carries, once per
Docker engine (a present tag is reused). The same script scripts/setup runs from a checkout
(scripts/lib/agent-image.sh), here from the installed copy, so both make the same tag."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from typing import TextIO

from agentfleet.errors import AgentfleetError
from agentfleet.program import program_root

SCRIPT = "scripts/lib/agent-image.sh"


def build_agent_image(out: TextIO, environ: Mapping[str, str]) -> int:
    """Builds (or finds) the image; prints its tag. Progress goes to stderr, as in setup."""
    root = program_root()
    # The script computes the tag with `$PYTHON -m components.image` in root: this interpreter.
    done = subprocess.run(
        ["bash", "-c", 'source "$1" && ensure_agent_image && printf "%s\\n" "$AGENT_IMAGE"', "agentfleet image",
         str(root / SCRIPT)],
        env={**environ, "PYTHON": sys.executable}, cwd=root, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise AgentfleetError(f"the agent image could not be built from {root / 'images'} (see above)")
    out.write(done.stdout)
    return 0
