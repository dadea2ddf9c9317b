"""Read the stack's fleet config, validate it, declare the Fleet, export its endpoints."""

import pulumi

from components.fleet import Fleet, FleetArgs
from components.spec import FleetConfigError, load_fleet


def read_secret(key: str) -> str | None:
    # Plain only long enough to validate; components wrap it with Output.secret.
    return pulumi.runtime.get_config(f"{pulumi.get_project()}:{key}")


try:
    spec = load_fleet(pulumi.get_stack(), pulumi.Config().get_object("fleet"), read_secret)
except FleetConfigError as error:
    raise pulumi.RunError(str(error)) from None

fleet = Fleet("fleet", FleetArgs(spec))
pulumi.export("agents", fleet.agents)
pulumi.export("agent_private_keys", fleet.agent_private_keys)
