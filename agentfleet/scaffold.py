"""`agentfleet new DIR [--yaml]`: a team's own fleet project, outside this repository.

What it writes is everything a team commits: Pulumi.yaml (the provider plugin taken from the
project's virtualenv, `venv/bin`, where requirements.txt installs agentfleet at the version that
made the project), the program (Python: the package's Fleet; YAML: an `agentfleet:index:Fleet`
resource and no code), Pulumi.dev.yaml with two Docker agents, a .gitignore that keeps the
virtualenv, keys, kept outputs and local state out of git, and a README. Nothing is overwritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from agentfleet import __version__
from agentfleet.errors import UsageError

# Pulumi's rule for project names.
PROJECT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
# The engine hands agentfleet's provider every `agentfleet:*` config key (secrets too) in its environment.
RESERVED = "agentfleet"
VIRTUALENV = "venv"


@dataclass(frozen=True)
class Project:
    """What varies between scaffolds: where, the project's name, which flavour."""

    directory: Path
    name: str
    yaml: bool = False


def project_name(directory: Path, name: str | None) -> str:
    """The given name, else the directory's; refused when Pulumi would refuse it or it is `agentfleet`."""
    chosen = name or directory.resolve().name
    if not PROJECT_NAME.match(chosen):
        raise UsageError(f"project name {chosen!r}: use letters, digits, '_', '.', '-' (at most 100); "
                         "give one with --name")
    if chosen.lower() == RESERVED:
        raise UsageError(f"project name {chosen!r} is agentfleet's config namespace: its keys, secrets too, would "
                         "reach agentfleet's provider; give another with --name")
    return chosen


def pulumi_yaml(project: Project) -> str:
    head = f"""name: {project.name}
description: {project.name}'s agents, made by agentfleet {__version__}
"""
    plugin = f"""# agentfleet's provider plugin comes from the agentfleet that requirements.txt installs into
# {VIRTUALENV}/ (its console script pulumi-resource-agentfleet): the pin there is the version.
plugins:
  providers:
    - name: agentfleet
      path: {VIRTUALENV}/bin
options:
  # Every preview, up and destroy first reads what each machine really is: `pulumi up` heals drift.
  refresh: always
"""
    if not project.yaml:
        return head + f"""runtime:
  name: python
  options:
    virtualenv: {VIRTUALENV}
""" + plugin
    return head + "runtime: yaml\n" + plugin + """# The fleet is the stack's `fleet` config (Pulumi.<stack>.yaml), one object; see agentfleet's
# docs/configuration.md for every field.
resources:
  agentfleet:
    type: agentfleet:index:Fleet
    properties:
      fleet: ${fleet}
# The two outputs `agentfleet ls/exec/ssh-config` read.
outputs:
  agents: ${agentfleet.agents}
  agent_private_keys: ${agentfleet.agentPrivateKeys}
"""


PROGRAM = '''"""This project's fleet: the stack's `fleet` config (Pulumi.<stack>.yaml) -> agentfleet's Fleet."""

import pulumi

from agentfleet.component import Fleet

fleet = Fleet("fleet", pulumi.Config().require_object("fleet"))
# The two outputs `agentfleet ls/exec/ssh-config` read.
pulumi.export("agents", fleet.agents)
pulumi.export("agent_private_keys", fleet.agent_private_keys)
'''


def dev_stack(project: Project) -> str:
    agents = "".join(f"""      - name: agent-{n}
        identity:
          name: Agent {word}
          email: agent-{n}@{project.name.lower()}.example
""" for n, word in ((1, "One"), (2, "Two")))
    return f"""# The dev stack: two Docker agents on this machine. Add `remote:` (and a `credential:`) to have
# each clone your repository at first boot; every field: agentfleet's docs/configuration.md.
config:
  {project.name}:fleet:
    defaults:
      backend: docker
      resources:
        cpus: 1
        memory: 512m
        pids: 256
    agents:
{agents}"""


GITIGNORE = f"""# The virtualenv agentfleet runs from (requirements.txt makes it again).
/{VIRTUALENV}/
# Per stack: the agents' keys and SSH config, the kept outputs (private keys), the audit log.
.agentfleet/
# A local state backend (PULUMI_BACKEND_URL=file://.../.pulumi-state) holds the stack's state.
.pulumi-state/
__pycache__/
*.pyc
"""


def readme(project: Project) -> str:
    program = "Pulumi.yaml (a YAML program: one `agentfleet:index:Fleet` resource)" if project.yaml \
        else "__main__.py (agentfleet's `Fleet`)"
    return f"""# {project.name}

This repository's agent fleets, one Pulumi stack each (`Pulumi.<stack>.yaml`), made with
agentfleet {__version__}: the fleet is the stack's `fleet` config, the program is {program}.

    python3 -m venv {VIRTUALENV} && {VIRTUALENV}/bin/pip install -r requirements.txt   # agentfleet, pinned
    . {VIRTUALENV}/bin/activate                                # agentfleet on PATH
    pulumi login file://$PWD/.pulumi-state            # or your team's state backend
    export PULUMI_CONFIG_PASSPHRASE=...                # or your team's secrets provider
    pulumi stack select --create dev --secrets-provider passphrase
    agentfleet image                                   # the agent image, built once per machine
    pulumi up                                          # the agents
    agentfleet ls                                      # their endpoints and identities
    agentfleet exec agent-1 -- git config user.email
    agentfleet ssh-config                              # then: ssh -F .agentfleet/dev/ssh_config agent-1
    pulumi destroy

Upgrading agentfleet: raise the pin in requirements.txt, `{VIRTUALENV}/bin/pip install -r
requirements.txt`, `pulumi up`; agentfleet's CHANGELOG says whether a version needs a step.
"""


def files(project: Project) -> dict[str, str]:
    made = {
        "Pulumi.yaml": pulumi_yaml(project),
        "Pulumi.dev.yaml": dev_stack(project),
        "requirements.txt": f"agentfleet=={__version__}\n",
        ".gitignore": GITIGNORE,
        "README.md": readme(project),
    }
    if not project.yaml:
        made["__main__.py"] = PROGRAM
    return made


def scaffold(directory: Path, name: str | None = None, yaml: bool = False) -> Project:
    """Write the project into directory (made if missing); refuses a directory with anything in it."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UsageError(f"{directory} exists and is not an empty directory; `agentfleet new` writes only into a new one")
    project = Project(directory, project_name(directory, name), yaml)
    directory.mkdir(parents=True, exist_ok=True)
    for relative, text in files(project).items():
        (directory / relative).write_text(text, encoding="utf-8")
    return project
