"""The mixed-fleet example (stacks/Pulumi.mixed.yaml) previews cleanly with the real engine: a
plan for every agent on every backend, and a warning for what this machine cannot drive
(Multipass is not installable here), naming the agents that need it."""

from __future__ import annotations

from pathlib import Path

import yaml

from components.project import fleet_config_key
from tests.e2e.support import FleetStack

EXAMPLE = Path(__file__).resolve().parents[2] / "stacks" / "Pulumi.mixed.yaml"


def test_mixed_example_previews_every_backend(make_stack):
    stack: FleetStack = make_stack("mixed")
    fleet = yaml.safe_load(EXAMPLE.read_text())["config"][fleet_config_key()]
    stack.set_fleet(fleet)
    lines: list[str] = []
    preview = stack.stack.preview(on_output=lines.append)
    output = "".join(lines)
    assert preview.change_summary["create"] > 0
    for agent in fleet["agents"]:
        suffix = "-container" if agent["backend"] == "docker" else "-vm"
        assert f"{agent['name']}{suffix}" in output, f"no machine planned for {agent['name']}"
    assert "backend multipass (agents agent-3, agent-4) needs multipass" in output
