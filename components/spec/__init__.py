"""What a valid stack config is: model.py (fields, frozen specs), values.py (value parsers), load.py (load_fleet)."""

from agentfleet.contract import BACKENDS
from components.spec.load import declared_backends, load_fleet
from components.spec.model import (
    BRANCH_PREFIX,
    DEFAULT_PORT_BASE,
    FLEET_CLUSTER,
    LOCAL_HOST,
    PORT_SPAN,
    AgentSpec,
    BaseSpec,
    ClusterSpec,
    Destination,
    FleetConfigError,
    FleetSpec,
    ForgeUser,
    HostSpec,
)
from components.spec.values import GIT_IDENT_STRIPS, destination, parse_memory_mib, parse_remote, unwritable

__all__ = [
    "BACKENDS", "BRANCH_PREFIX", "DEFAULT_PORT_BASE", "FLEET_CLUSTER", "GIT_IDENT_STRIPS", "LOCAL_HOST", "PORT_SPAN", "AgentSpec", "BaseSpec",
    "ClusterSpec", "Destination", "FleetConfigError", "FleetSpec", "ForgeUser", "HostSpec", "declared_backends", "destination",
    "load_fleet", "parse_memory_mib", "parse_remote", "unwritable",
]
