"""The Pulumi project a fleet's stacks belong to: its name (Pulumi.yaml) and so the config key of
its fleet, `<project>:fleet`.

Why the reference project is not called `agentfleet`: the engine hands a provider plugin every
config key of its package's namespace, decrypted, in its environment (PULUMI_CONFIG); a project
named like the package would give agentfleet's provider the fleet's secrets that way.
"""

from __future__ import annotations

from pathlib import Path

import yaml

PROJECT_FILE = Path(__file__).resolve().parents[1] / "Pulumi.yaml"
FLEET_KEY = "fleet"


def project_name(project_file: Path = PROJECT_FILE) -> str:
    return str(yaml.safe_load(project_file.read_text(encoding="utf-8"))["name"])


def fleet_config_key(project_file: Path = PROJECT_FILE) -> str:
    """`<project>:fleet`: where a stack file of the project keeps its fleet."""
    return f"{project_name(project_file)}:{FLEET_KEY}"
