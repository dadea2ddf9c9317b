"""This repository's fleet program: the stack's `fleet` config -> the Fleet -> its endpoints.

Programs elsewhere declare the same Fleet through agentfleet's provider (`agentfleet:index:Fleet`).
"""

import pulumi

from components.program import declare_fleet
from components.spec import FleetConfigError

try:
    fleet = declare_fleet("fleet", pulumi.Config().get_object("fleet"))
except FleetConfigError as error:
    raise pulumi.RunError(str(error)) from None
pulumi.export("agents", fleet.agents)
pulumi.export("agent_private_keys", fleet.agent_private_keys)
if fleet.forge is not None:
    pulumi.export("forge", fleet.forge)  # a secret: `agentfleet pr` reads the token from it
