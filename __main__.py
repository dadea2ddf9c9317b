"""Read the stack's fleet config, check it and this machine, declare the Fleet, export endpoints.

An invalid config fails preview and up alike; what this machine lacks (tools, free ports, name
resolution) fails `up` before anything is created and is a warning in preview.
"""

import pulumi

from components.backends.registry import preflight_problems
from components.fleet import Fleet, FleetArgs
from components.provider_pickling import keep_pickling_flat
from components.spec import FleetConfigError, load_fleet
from components.stack_traces import omit_stack_traces


def read_secret(key: str) -> str | None:
    # Plain only long enough to validate; components wrap it with Output.secret.
    return pulumi.runtime.get_config(f"{pulumi.get_project()}:{key}")


try:
    spec = load_fleet(pulumi.get_stack(), pulumi.Config().get_object("fleet"), read_secret)
except FleetConfigError as error:
    raise pulumi.RunError(str(error)) from None
problems = preflight_problems(spec)
if problems and pulumi.runtime.is_dry_run():
    # A preview still shows the plan (e.g. for a fleet meant for another machine), with what `up` would refuse.
    for problem in problems:
        pulumi.log.warn(f"`pulumi up` will refuse this: {problem}")
elif problems:
    raise pulumi.RunError("this machine cannot run the fleet yet:\n" + "\n".join(f"  - {p}" for p in problems))

omit_stack_traces()  # 1.7 KB of state per resource, read by nothing here
keep_pickling_flat()  # else fleets past ~190 agents fail (RecursionError in the SDK)
fleet = Fleet("fleet", FleetArgs(spec))
pulumi.export("agents", fleet.agents)
pulumi.export("agent_private_keys", fleet.agent_private_keys)
