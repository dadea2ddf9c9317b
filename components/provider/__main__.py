"""`pulumi-resource-agentfleet`: the engine starts this and talks to it over gRPC."""

import sys

from pulumi.provider.experimental.server import main

from agentfleet import __version__
from components.provider.server import AgentfleetProvider

main(sys.argv[1:], __version__, AgentfleetProvider())
