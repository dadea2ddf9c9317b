"""One agent spec -> one cloud-config document, from the templates in cloud-init/.

Why one document: every backend hands the same cloud-config to cloud-init (NoCloud seed in
Docker, Multipass `--cloud-init`, Lima provisioning), so an agent is set up identically whatever
it runs on. This module is pure: keys arrive as plain strings inside an `apply`, and the result
is only ever passed on as a Pulumi secret.

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

from agentfleet.contract import GIT_CREDENTIALS_PATH, HOME, TRACE2_DIR, WORKSPACE
from agentfleet.workspace import FIRST_CLONE
from components.egress import POLICY_PATHS, EgressPolicy
from components.gitconfig import Section, config_file
from components.pushguard import HOOKS_DIR, PushGuard, hook_files
from components.spec import AgentSpec, FleetSpec

TEMPLATES = Path(__file__).resolve().parent.parent / "cloud-init"
# What every agent has alike: in the agent image (images/Dockerfile), in a VM's cloud-config.
AGENT_FILES = Path(__file__).resolve().parent.parent / "images" / "agent-files"
# Where a backend mounts the fleet's shared, read-only mirror (FleetSpec.shared_objects); the
# first clone borrows its objects through git alternates (`git clone --reference`).
SHARED_OBJECTS = "/var/lib/agentfleet/shared.git"
REMOTE_KEY_PATH = f"{HOME}/.ssh/id_remote"
EGRESS_SCRIPT_PATH = "/var/lib/cloud/scripts/per-boot/10-agentfleet-egress"
# The policy's code a VM's document carries (Docker's policy container gets it uploaded).
RESOLVER_PATH, RECORDER_PATH = "/usr/local/lib/agentfleet/resolver", "/usr/local/lib/agentfleet/agentfleet_denied.py"
EGRESS_FILES = (*POLICY_PATHS, RESOLVER_PATH, RECORDER_PATH)
# Files only some documents have: an in-place update removes those its document does not have
# (components/reapply.py), so an old credential or a lifted policy does not stay behind.
OPTIONAL_FILES = (REMOTE_KEY_PATH, GIT_CREDENTIALS_PATH, *EGRESS_FILES)


def system_gitconfig(guard: PushGuard) -> str:
    """/etc/gitconfig, root's: every git process on the machine, whoever runs it, writes its trace2
    events to TRACE2_DIR and runs the fleet's hooks (components/pushguard.py)."""
    return config_file([("trace2", [("eventTarget", TRACE2_DIR)]), ("core", [("hooksPath", HOOKS_DIR)]),
                        guard.settings()])


@dataclass(frozen=True)
class AgentKeys:
    """Key material for one agent; private parts are secrets and never logged."""

    operator_public_key: str
    host_private_key: str
    host_public_key: str
    remote_private_key: Optional[str] = None
    https_token: Optional[str] = None


def _gitconfig(agent: AgentSpec, keys: AgentKeys, reference: Optional[str]) -> str:
    sections: list[Section] = [("user", [("name", agent.identity.name), ("email", agent.identity.email)])]
    if keys.remote_private_key:
        ssh = f"ssh -i {REMOTE_KEY_PATH} -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes"
        sections.append(("core", [("sshCommand", ssh)]))
    if keys.https_token:
        sections.append(("credential", [("helper", "store")]))
    settings = [("branch", agent.branch), ("workspace", WORKSPACE)]
    if agent.remote:
        settings.append(("remote", agent.remote.url))
        # Only when asked: an agent without `clone` keeps the document it has, and no update.
        if agent.clone.depth is not None:
            settings.append(("depth", str(agent.clone.depth)))
        if agent.clone.filter is not None:
            settings.append(("filter", agent.clone.filter))
    if reference:
        settings.append(("reference", reference))
    return config_file([*sections, ("agentfleet", settings)])


def _file(path: str, content: str, permissions: str, owner: str = "agent:agent") -> dict[str, Any]:
    # Deferred: the agent user exists only after users_groups, which runs after write_files.
    return {"path": path, "content": content, "owner": owner, "permissions": permissions, "defer": True}


def _root_file(path: str, content: str, permissions: str) -> dict[str, Any]:
    return {"path": path, "content": content, "owner": "root:root", "permissions": permissions}


def _egress_files(agent: AgentSpec) -> list[dict[str, Any]]:
    """The script that applies the policy at every boot (always: it also lifts a policy), and
    the policy's files (none when egress is open)."""
    script = _root_file(EGRESS_SCRIPT_PATH, (TEMPLATES / "apply-egress.sh").read_text(), "0o700")
    if agent.egress == "open":
        return [script]
    return [
        *(_root_file(path, content, "0o600") for path, content in EgressPolicy.of(agent).files().items()),
        _root_file(RESOLVER_PATH, (TEMPLATES / "agentfleet-resolver").read_text(), "0o700"),
        _root_file(RECORDER_PATH, (TEMPLATES / "agentfleet_denied.py").read_text(), "0o600"),
        script,
    ]


def _credential_files(agent: AgentSpec, keys: AgentKeys) -> list[dict[str, Any]]:
    files = []
    if keys.remote_private_key:
        files.append(_file(REMOTE_KEY_PATH, keys.remote_private_key.rstrip("\n") + "\n", "0o600"))
    if keys.https_token and agent.remote:
        user_host = f"x-access-token:{keys.https_token}@{agent.remote.host}"
        files.append(_file(GIT_CREDENTIALS_PATH, f"https://{user_host}\n", "0o600"))
    return files


def shared_files() -> list[dict[str, Any]]:
    """The files every agent has alike (the fleet's git hooks, the first-boot clone): the agent
    image has them; a VM, booted from a stock image, gets them in its cloud-config."""
    return [*(_root_file(path, content, "0o755") for path, content in hook_files().items()),
            _root_file(FIRST_CLONE, (AGENT_FILES / "first-clone").read_text(), "0o755")]


def render_cloud_config(agent: AgentSpec, keys: AgentKeys, reference: Optional[str] = None,
                        fleet: Optional[FleetSpec] = None, policy: bool = True, shared: bool = True) -> str:
    """The complete `#cloud-config` user-data for one agent; `reference` is the path of a
    repository whose objects the first clone borrows (SHARED_OBJECTS where the backend mounts it);
    `fleet` gives the base branch and the other agents' branches its push guard refuses; `policy`
    False leaves the egress policy out (the backend applies it outside the machine: Docker);
    `shared` False leaves out the files the agent image has (shared_files)."""
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
        *(_egress_files(agent) if policy else []),
        _root_file("/etc/gitconfig", system_gitconfig(PushGuard.of(agent, fleet)), "0o644"),
        _file(f"{HOME}/.gitconfig", _gitconfig(agent, keys, reference), "0o644"),
        _file(f"{HOME}/.ssh/known_hosts", "\n".join(agent.known_hosts) + "\n", "0o644"),
        *_credential_files(agent, keys),
        *(shared_files() if shared else []),
    ]
    return "#cloud-config\n" + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1000)


def pool_document(host_private_key: str, host_public_key: str) -> str:
    """The `#cloud-config` a warm pool member boots from (components/backends/docker/pool.py):
    the agent document's user, sshd and directories, but nobody's key (no login), a throwaway
    host key, no files and no clone. A claim applies the agent's own document over it."""
    document = yaml.safe_load((TEMPLATES / "agent.yaml").read_text())
    document["ssh_keys"] = {"ed25519_private": host_private_key.rstrip("\n") + "\n", "ed25519_public": host_public_key}
    del document["packages"], document["write_files"]
    document["runcmd"] = [step for step in document["runcmd"] if FIRST_CLONE not in step]
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
