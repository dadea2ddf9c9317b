"""Declare one fleet from its config: check the config and this machine, then the Fleet.

The one way a fleet is declared, whoever asks: this repository's program (__main__.py) and the
provider's construct (a Fleet declared from YAML or any other language). An invalid config fails
preview and up alike; what this machine lacks (tools, free ports, name resolution) fails `up`
before anything is created and is a warning in preview.
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi

from components.backends.registry import preflight_problems
from components.deploykey import forge_problems
from components.fleet import Fleet, FleetArgs
from components.spec import FleetSpec, load_fleet
from components.stack_traces import omit_stack_traces


def read_secret(key: str) -> Optional[str]:
    # Plain only long enough to validate; components wrap it with Output.secret.
    return pulumi.runtime.get_config(f"{pulumi.get_project()}:{key}")


def fleet_spec(config: Any) -> FleetSpec:
    """The stack's fleet, or FleetConfigError naming every problem."""
    return load_fleet(pulumi.get_stack(), config, read_secret)


def check_machine(spec: FleetSpec) -> None:
    problems = preflight_problems(spec) + forge_problems(spec)
    if problems and pulumi.runtime.is_dry_run():
        # A preview still shows the plan (e.g. for a fleet meant for another machine), with what `up` would refuse.
        for problem in problems:
            pulumi.log.warn(f"`pulumi up` will refuse this: {problem}")
    elif problems:
        raise pulumi.RunError("this machine cannot run the fleet yet:\n" + "\n".join(f"  - {p}" for p in problems))


def declare_fleet(name: str, config: Any, opts: Optional[pulumi.ResourceOptions] = None) -> Fleet:
    """Raises FleetConfigError for a bad config, RunError for what this machine lacks."""
    spec = fleet_spec(config)
    check_machine(spec)
    omit_stack_traces()  # 1.7 KB of state per resource, read by nothing here
    return Fleet(name, FleetArgs(spec), opts)
