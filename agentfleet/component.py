"""agentfleet's Fleet for a Pulumi program in Python: the component `agentfleet:index:Fleet`,
built by agentfleet's provider plugin through construct, as a program in any language gets it.

    fleet = Fleet("fleet", pulumi.Config().require_object("fleet"))
    pulumi.export("agents", fleet.agents)
    pulumi.export("agent_private_keys", fleet.agent_private_keys)

Why remote and not the component class itself: the program then holds none of the provider's
code, and the stack records the provider's version (this package's), so raising the pin in
requirements.txt is the whole upgrade.
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi

from agentfleet import __version__

TYPE = "agentfleet:index:Fleet"


class Fleet(pulumi.ComponentResource):
    """`fleet` is the object a stack file keeps under `<project>:fleet` (docs/configuration.md)."""

    agents: pulumi.Output[dict[str, Any]]
    agentPrivateKeys: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, fleet: Any, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__(TYPE, name, {"fleet": fleet, "agents": None, "agentPrivateKeys": None},
                         pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(version=__version__)), remote=True)

    @property
    def agent_private_keys(self) -> pulumi.Output[dict[str, str]]:
        """Each agent's private key (a secret), what the client reads as `agent_private_keys`."""
        return self.agentPrivateKeys
