"""The mixed-fleet example (stacks/Pulumi.mixed.yaml) previews cleanly with the real engine: a
plan for every agent on every backend, and a warning for what this machine cannot drive, naming
the agents that need it.

Whether this machine has Multipass is not left to chance: a STAND-IN `multipass` first on the
program's PATH answers `version` without a daemon behind it, so the preview must warn for
Multipass wherever it runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from components.project import fleet_config_key
from tests.e2e.support import FleetStack
from tests.stand_ins import write_stand_in

EXAMPLE = Path(__file__).resolve().parents[2] / "stacks" / "Pulumi.mixed.yaml"


def test_mixed_example_previews_every_backend(make_stack, tmp_path):
    stack: FleetStack = make_stack("mixed")
    multipass = write_stand_in(tmp_path / "bin", "multipass", "echo 'multipass   1.16.3'\n")
    stack.stack.workspace.env_vars["PATH"] = f"{multipass.parent}:{os.environ['PATH']}"
    fleet = yaml.safe_load(EXAMPLE.read_text())["config"][fleet_config_key()]
    stack.set_fleet(fleet)
    lines: list[str] = []
    try:
        preview = stack.stack.preview(on_output=lines.append)
    finally:
        stack.stack.workspace.env_vars.pop("PATH")
    output = "".join(lines)
    assert preview.change_summary["create"] > 0
    for agent in fleet["agents"]:
        suffix = "-container" if agent["backend"] == "docker" else "-vm"
        assert f"{agent['name']}{suffix}" in output, f"no machine planned for {agent['name']}"
    assert ("backend multipass (agents agent-3, agent-4) needs a running Multipass daemon "
            "(`multipass version` lists no multipassd: start it with `sudo snap start multipass`)") in output
