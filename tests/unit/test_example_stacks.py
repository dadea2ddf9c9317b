"""The example fleets in stacks/ are valid configs: what a newcomer copies must load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.project import fleet_config_key
from components.spec import load_fleet

STACKS = sorted((Path(__file__).resolve().parents[2] / "stacks").glob("Pulumi.*.yaml"))


def test_there_are_example_stacks() -> None:
    assert {path.name for path in STACKS} >= {"Pulumi.dev.yaml", "Pulumi.mixed.yaml", "Pulumi.cluster.yaml"}


@pytest.mark.parametrize("path", STACKS, ids=lambda path: path.name)
def test_every_example_stack_loads(path: Path) -> None:
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    fleet = load_fleet(stack, yaml.safe_load(path.read_text())["config"][fleet_config_key()], {}.get)
    assert fleet.agents and all(fleet.placement(agent) for agent in fleet.agents)
