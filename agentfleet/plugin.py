"""`pulumi-resource-agentfleet`, the console script of an installed agentfleet: the engine starts
it (from where the project's Pulumi.yaml says, `plugins.providers`) and talks to it over gRPC."""

from __future__ import annotations

import runpy

from agentfleet.program import importable


def main() -> None:
    importable()
    runpy.run_module("components.provider", run_name="__main__", alter_sys=True)
