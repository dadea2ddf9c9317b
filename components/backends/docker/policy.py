"""A Docker agent's policy container: the companion that owns the agent's network namespace and
applies its egress policy there, out of the agent's reach.

Why a companion: the policy (nftables table, resolver, recorder of refusals) needs NET_ADMIN, and
whatever holds it can lift the policy. The agent's container joins this container's network
namespace (`network_mode: container:<policy>`) and holds no capability that changes the network,
so root inside the agent can neither list, flush nor change the table, nor see or kill the
resolver (another PID namespace). The companion is the same agent image started with its own
entrypoint (images/agentfleet-policy), which applies the files uploaded here and then only waits,
so the resolver crashing never takes the namespace with it. It carries the fleet network, the
attached networks, the published SSH port and the hostname; the agent's container carries the
workspace and sshd. The record of refusals is a volume of this container that the agent mounts
read-only, where `agentfleet audit --denied` reads it over the agent's SSH.

The container's `egress` field declares the policy (components/egress.py EgressPolicy), and its
files are rendered from it at each upload: they travel in the Engine API's request body (an
archive upload), never in arguments, environment or labels; in-place changes of `allow`, `dns` or
`egress` upload them again and re-apply (POLICY_APPLY), in this container only.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
from typing import Any

from docker.errors import APIError
from docker.types import Mount

from agentfleet.contract import DENIED_RECORD
from components.backends.docker.engines import refused_create
from components.cloudinit import TEMPLATES
from components.egress import POLICY_PATHS, EgressPolicy
from components.spec import AgentSpec

# What the policy needs: nft (the table), SO_MARK (the resolver's upstream queries), nflog (the
# recorder). Nothing else.
CAPABILITIES = ("NET_ADMIN",)
MEMORY_MIB = 96  # the resolver (Python) and a shell; measured ~25 MiB
PIDS = 64
ENTRYPOINT = "/usr/local/sbin/agentfleet-policy"
STATE = "var/lib/agentfleet-policy"
STATUS = "/run/agentfleet-policy/status"
APPLY_LOG = "/run/agentfleet-policy/apply.log"
RECORD_DIR = posixpath.dirname(DENIED_RECORD)
# Written by the entrypoint once the policy is in force at a start (images/agentfleet-policy); the
# agent's container, started right after this one, runs nothing of its config before it is there.
POLICY_GATE = f"{RECORD_DIR}/.policy-applied"
READY_TIMEOUT_S = 60
CODE_FILES = {"usr/local/lib/agentfleet/apply-egress": "apply-egress.sh",
              "usr/local/lib/agentfleet/resolver": "agentfleet-resolver",
              "usr/local/lib/agentfleet/agentfleet_denied.py": "agentfleet_denied.py"}
# An in-place change: $1 the uploaded set's digest, then the policy files it does not have (a
# lifted policy's). Nothing happens when that set is the one applied last.
POLICY_APPLY = f"""set -u
digest=$1
shift
state=/{STATE}
[ "$(cat "$state/applied" 2>/dev/null)" != "$digest" ] || exit 0
rm -f "$@"
AGENTFLEET_RESOLV_CONF=$state/resolv.conf sh /usr/local/lib/agentfleet/apply-egress >{APPLY_LOG} 2>&1 || {{
    status=$?; cat {APPLY_LOG}; exit "$status"; }}
echo "$digest" >"$state/applied"
"""
# Waits for the entrypoint's apply at a start; prints its status and, when it failed, its log.
# The status is there once the file has content (an entrypoint of before 0.5.0 wrote it in place).
WAIT_FOR_POLICY = f"""deadline=$1
until [ -s {STATUS} ]; do
    [ "$(date +%s)" -lt "$deadline" ] || exit 124
    sleep 0.05
done
status=$(cat {STATUS})
[ "$status" = 0 ] || {{ cat {APPLY_LOG}; exit "$status"; }}
"""


class PolicyError(Exception):
    """The policy container could not be made or its policy not applied; the message says why."""


def policy_name(container: str) -> str:
    return f"{container}-policy"


def code_digest() -> str:
    """The policy's code (script, resolver, recorder): a new agentfleet with new code changes
    every agent's `egress` field, so `pulumi up` uploads it in place."""
    digest = hashlib.sha256()
    for source in CODE_FILES.values():
        digest.update((TEMPLATES / source).read_bytes())
    return digest.hexdigest()[:16]


def policy_fields(agent: AgentSpec) -> dict[str, Any]:
    """The `egress` field of an agent's container: its policy as declared (EgressPolicy: none with
    open egress; its files are rendered at upload) and the code's digest."""
    fields: dict[str, Any] = {"code": code_digest()}
    if agent.egress != "open":
        fields.update(EgressPolicy.of(agent).fields())
    return fields


def policy_archive(egress: dict[str, Any]) -> tuple[bytes, str, list[str]]:
    """The archive to upload (policy files rendered from the field, code, the set's digest), the
    digest, and the policy files it lacks (to remove)."""
    from components.backends.docker.driver import mount_parents, tar_of

    rendered = EgressPolicy.from_fields(egress).files() if "destinations" in egress else {}
    files = {path.lstrip("/"): (content.encode(), 0o600) for path, content in rendered.items()}
    files.update({path: ((TEMPLATES / source).read_bytes(), 0o700 if path.endswith(("resolver", "apply-egress"))
                         else 0o600) for path, source in CODE_FILES.items()})
    digest = hashlib.sha256(b"".join(p.encode() + b"\0" + c for p, (c, _) in sorted(files.items()))).hexdigest()
    files[f"{STATE}/uploaded"] = (digest.encode() + b"\n", 0o600)
    # The directories above the record's volume as well (driver.mount_parents: on an engine with
    # userns-remap the first upload would leave /var/log/agentfleet nobody's, and apply-egress fails).
    directories = {**mount_parents((RECORD_DIR,)), "etc/agentfleet": 0o700, "usr/local/lib/agentfleet": 0o755,
                   STATE: 0o700}
    lacking = [path for path in POLICY_PATHS if path not in rendered]
    return tar_of(files, directories), digest, lacking


def create_policy(docker, name: str, fields: dict[str, Any], bind: str, port: int, engine: dict[str, Any]):
    """The agent's policy container, made, joined to its networks and given its policy, not yet
    started (the agent's container is made to join it first, then both start: driver.py);
    raises PolicyError (and leaves nothing behind) when it cannot be made."""
    labels = policy_labels(fields["labels"])
    try:
        policy = docker.containers.create(
            fields["image"], name=policy_name(name), hostname=fields["hostname"], detach=True,
            entrypoint=[ENTRYPOINT], network=fields["network"], labels=labels,
            ports={"22/tcp": (bind, port)}, mounts=[Mount(RECORD_DIR, None, type="volume")],
            cap_drop=["ALL"], cap_add=list(CAPABILITIES), security_opt=["no-new-privileges"],
            restart_policy={"Name": fields["restart"]}, mem_limit=MEMORY_MIB * 1024 * 1024,
            memswap_limit=MEMORY_MIB * 1024 * 1024, pids_limit=PIDS,
        )
    except APIError as error:
        raise PolicyError(refused_create(policy_name(name), docker.engine.describe(), error)) from None
    try:
        for network in engine.get("attach_networks") or []:
            docker.networks.get(network).connect(policy)
        archive, _, _ = policy_archive(fields["egress"])
        policy.put_archive("/", archive)
    except APIError as error:
        remove_policy(docker, name)
        raise PolicyError(getattr(error, "explanation", None) or str(error)) from None
    return policy


def policy_labels(labels: dict[str, str]) -> dict[str, str]:
    """The agent's labels, but naming the agent it serves as `agentfleet.policy`: tools that count
    agents by `agentfleet.agent` see one container per agent."""
    own = {key: value for key, value in labels.items() if key != "agentfleet.agent"}
    return {**own, "agentfleet.policy": labels.get("agentfleet.agent", "")}


def start_policy(policy) -> None:
    """Start it and wait until its entrypoint applied the policy."""
    policy.start()
    wait_for_policy(policy)


def wait_for_policy(policy) -> None:
    """Wait until its entrypoint applied the policy at this start; raises PolicyError if it failed."""
    deadline = str(int(time.time() + READY_TIMEOUT_S))
    status, output = policy.exec_run(["sh", "-c", WAIT_FOR_POLICY, "wait-for-policy", deadline])
    if status == 124:
        raise PolicyError(f"container {policy.name}: the policy was not applied within {READY_TIMEOUT_S}s")
    if status != 0:
        raise PolicyError(f"container {policy.name}: applying the egress policy failed (exit {status}):\n"
                          f"{output.decode(errors='replace').strip()}")


def apply_policy(policy, egress: dict[str, Any]) -> None:
    """Upload the policy's files and apply them, unless that very set is in force already."""
    archive, digest, lacking = policy_archive(egress)
    try:
        policy.put_archive("/", archive)
        status, output = policy.exec_run(["sh", "-c", POLICY_APPLY, "apply-policy", digest, *lacking])
    except APIError as error:
        raise PolicyError(f"container {policy.name}: applying the egress policy failed: {error.explanation}") from None
    if status != 0:
        raise PolicyError(f"container {policy.name}: applying the egress policy failed (exit {status}):\n"
                          f"{output.decode(errors='replace').strip()}")


def remove_policy(docker, name: str) -> None:
    """Remove the policy container and its record volume, if there."""
    from docker.errors import NotFound

    try:
        docker.api.remove_container(policy_name(name), force=True, v=True)
    except NotFound:
        pass


def started(attrs: dict[str, Any]) -> tuple[str, str]:
    """A container's start time, comparable: the engine writes fractions of varying length."""
    stamp = attrs["State"].get("StartedAt") or ""
    seconds, _, fraction = stamp.rstrip("Z").partition(".")
    return seconds, fraction.ljust(9, "0")


def joined(agent: dict[str, Any], policy: dict[str, Any]) -> bool:
    """Whether the agent's container runs in its policy container's current network namespace: a
    policy container started again has a new one, which the agent joins only by starting again."""
    return (agent["HostConfig"].get("NetworkMode") == f"container:{policy['Id']}"
            and started(agent) >= started(policy))


def policed_state(agent: dict[str, Any], policy: dict[str, Any] | None) -> str:
    """The agent container's state, "running" only with its policy container running under it;
    anything else is drift that `pulumi up` heals."""
    status = agent["State"].get("Status", "unknown")
    if status != "running":
        return status
    if policy is None:
        return "running without its policy container"
    if policy["State"].get("Status") != "running":
        return f"running, its policy container {policy['State'].get('Status')}"
    if not joined(agent, policy):
        return "running outside its policy container's network (started again since)"
    return "running"
