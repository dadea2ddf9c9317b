"""One agent spec -> one cloud-config document, from the template in cloud-init/.

Why one document: every backend hands the same cloud-config to cloud-init (NoCloud seed in
Docker, Multipass `--cloud-init`, Lima provisioning), so an agent is set up identically whatever
it runs on. This module is pure: keys arrive as plain strings inside an `apply`, and the result
is only ever passed on as a Pulumi secret.

Why the scripts stay out of a Docker agent's document: the agent image carries them
(images/agentfleet/, installed in SCRIPT_DIR), so the document holds only what differs per
agent. It is the secret input of the agent's container, stored encrypted in the stack's state
and rewritten at every step of an `up`: the scripts were more than half of it. VMs boot images
agentfleet does not always build, so their documents still write the scripts.

Why every value keeps its type without quotes: Multipass v1.16 loads the document and writes it
out again dropping the quotes of strings (canonical/multipass#4176), after which cloud-init would
read "0755" as 493 or "yes" as true. So modes are strings that read as strings unquoted (0o644
for write_files, symbolic for `install -m`), values from the fleet config sit inside file
contents, and any other string that YAML would read as another type carries an explicit `!!str`
tag, which survives such a dump (tests/unit/test_cloud_config_round_trip.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from agentfleet.contract import HOME, TRACE2_DIR, WORKSPACE
from components.egress import policy_document
from components.spec import AgentSpec

TEMPLATES = Path(__file__).resolve().parent.parent / "cloud-init"
SCRIPTS = Path(__file__).resolve().parent.parent / "images" / "agentfleet"
# Where the agent's scripts live in the machine; the Docker image installs them there.
SCRIPT_DIR = "/usr/local/lib/agentfleet"
SCRIPTS_IN_IMAGE = frozenset({"docker"})
EGRESS_PER_BOOT = "/var/lib/cloud/scripts/per-boot/10-agentfleet-egress"
# Where a backend mounts the fleet's shared, read-only mirror (FleetSpec.shared_objects); the
# first clone borrows its objects through git alternates (`git clone --reference`).
SHARED_OBJECTS = "/var/lib/agentfleet/shared.git"
REMOTE_KEY_PATH = f"{HOME}/.ssh/id_remote"
# Every git process on the machine, whoever runs it, writes its trace2 events here.
SYSTEM_GITCONFIG = f"[trace2]\n\teventTarget = {TRACE2_DIR}\n"


@dataclass(frozen=True)
class AgentKeys:
    """Key material for one agent; private parts are secrets and never logged."""

    operator_public_key: str
    host_private_key: str
    host_public_key: str
    remote_private_key: Optional[str] = None
    https_token: Optional[str] = None


def _git_value(value: str) -> str:
    """A git config value read back as given: quoted, so `;`, `#` and edge spaces stay in it."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _gitconfig(agent: AgentSpec, keys: AgentKeys, reference: Optional[str]) -> str:
    lines = ["[user]", f"\tname = {_git_value(agent.identity.name)}",
             f"\temail = {_git_value(agent.identity.email)}"]
    if keys.remote_private_key:
        lines += [
            "[core]",
            f"\tsshCommand = ssh -i {REMOTE_KEY_PATH} -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes",
        ]
    if keys.https_token:
        lines += ["[credential]", "\thelper = store"]
    lines += ["[agentfleet]", f"\tbranch = {_git_value(agent.branch)}", f"\tworkspace = {_git_value(WORKSPACE)}"]
    if agent.remote:
        lines.append(f"\tremote = {_git_value(agent.remote.url)}")
    if reference:
        lines.append(f"\treference = {_git_value(reference)}")
    return "\n".join(lines) + "\n"


def _file(path: str, content: str, permissions: str, owner: str = "agent:agent") -> dict[str, Any]:
    # Deferred: the agent user exists only after users_groups, which runs after write_files.
    return {"path": path, "content": content, "owner": owner, "permissions": permissions, "defer": True}


def _root_file(path: str, content: str, permissions: str) -> dict[str, Any]:
    return {"path": path, "content": content, "owner": "root:root", "permissions": permissions}


def _script(agent: AgentSpec, name: str) -> str:
    """A script of images/agentfleet/ as a file's content: the script itself, or where the
    image has it, two lines that run the image's copy."""
    if agent.backend in SCRIPTS_IN_IMAGE:
        return f'#!/bin/sh\nexec {SCRIPT_DIR}/{name} "$@"\n'
    return (SCRIPTS / name).read_text()


def _egress_files(agent: AgentSpec) -> list[dict[str, Any]]:
    """The policy and the per-boot script that applies it (none when egress is open)."""
    if agent.egress == "open":
        return []
    return [
        _root_file("/etc/agentfleet/egress.conf", policy_document(agent), "0o644"),
        _root_file(EGRESS_PER_BOOT, _script(agent, "apply-egress"), "0o700"),
    ]


def _first_clone_files(agent: AgentSpec) -> list[dict[str, Any]]:
    """The first-boot script runcmd runs (at SCRIPT_DIR/first-clone), unless the image has it."""
    if agent.backend in SCRIPTS_IN_IMAGE:
        return []
    return [_file(f"{SCRIPT_DIR}/first-clone", _script(agent, "first-clone"), "0o755", owner="root:root")]


def _credential_files(agent: AgentSpec, keys: AgentKeys) -> list[dict[str, Any]]:
    files = []
    if keys.remote_private_key:
        files.append(_file(REMOTE_KEY_PATH, keys.remote_private_key.rstrip("\n") + "\n", "0o600"))
    if keys.https_token and agent.remote:
        user_host = f"x-access-token:{keys.https_token}@{agent.remote.host}"
        files.append(_file(f"{HOME}/.git-credentials", f"https://{user_host}\n", "0o600"))
    return files


def render_cloud_config(agent: AgentSpec, keys: AgentKeys, reference: Optional[str] = None) -> str:
    """The complete `#cloud-config` user-data for one agent; `reference` is the path of a
    repository whose objects the first clone borrows (SHARED_OBJECTS where the backend mounts it)."""
    document = yaml.safe_load((TEMPLATES / "agent.yaml").read_text())
    document["users"][0]["ssh_authorized_keys"] = [keys.operator_public_key]
    document["ssh_keys"] = {
        "ed25519_private": keys.host_private_key.rstrip("\n") + "\n",
        "ed25519_public": keys.host_public_key,
    }
    if agent.packages:
        document["packages"] = list(agent.packages)
    else:
        del document["packages"]  # no package module run, so no `apt-get update`
    document["write_files"] = [
        *_egress_files(agent),
        _root_file("/etc/gitconfig", SYSTEM_GITCONFIG, "0o644"),
        _file(f"{HOME}/.gitconfig", _gitconfig(agent, keys, reference), "0o644"),
        _file(f"{HOME}/.ssh/known_hosts", "\n".join(agent.known_hosts) + "\n", "0o644"),
        *_credential_files(agent, keys),
        *_first_clone_files(agent),
    ]
    return "#cloud-config\n" + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1000)


_STR_TAG = "tag:yaml.org,2002:str"
_PLAIN = yaml.resolver.Resolver()  # SafeLoader's implicit types, which cloud-init's loader uses


def _retyped_unquoted(value: str) -> bool:
    """Whether cloud-init's YAML (1.1) reads `value` written plain as something other than this
    string: "0755", "yes", "null", "1.5", "2001-12-14", "". Multi-line strings are never plain."""
    return "\n" not in value and _PLAIN.resolve(yaml.ScalarNode, value, (True, False)) != _STR_TAG


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (keys, scripts) as readable `|` blocks, and every string that
    YAML would read as another type without its quotes with an explicit `!!str` tag."""

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> Optional[str]:
        # The serializer writes a node's tag unless this resolves it implicitly; quoted strings
        # resolve to str, so that answer is withheld for the ones that would change type.
        if kind is yaml.ScalarNode and implicit == (False, True) and _retyped_unquoted(value):
            return None
        return super().resolve(kind, value, implicit)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar(_STR_TAG, value, style=style)


_Dumper.add_representer(str, _represent_str)
