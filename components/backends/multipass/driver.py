"""The Multipass CLI contract, and the driver that creates, reads, starts and deletes an agent's VM.

- The commands agentfleet issues to Multipass and how their outputs read are pure functions,
  tested from recorded outputs.
- `VmDriver` launches the VM with the cloud-config on stdin, reads its endpoint, waits for the
  pinned host key, reads the VM back on refresh (a changed address updates the outputs; a
  missing instance, or one deleted without --purge, reads as gone; a stopped one reads as
  stopped and `pulumi up` starts it), and purges it.

What Multipass does, as read from its source (canonical/multipass, v1.16.3 unless noted; the
fixtures in tests/unit/fixtures/multipass/ are written in these formats):
- `launch --cloud-init -` reads the user-data from stdin (src/client/cli/cmd/launch.cpp), so
  the cloud-config never touches argv, the environment or a file. If the user-data has a
  `users:` list, the daemon appends `default` to it, so Multipass can still log in as `ubuntu`
  to wait for cloud-init (src/daemon/daemon.cpp, prepare_user_data).
- `launch` returns once sshd answers and cloud-init wrote boot-finished. `--timeout N` bounds
  that (default 300 s each for boot and initialisation); when the client's own timer fires it
  prints "Timed out waiting for instance launch." and exits 5; the daemon's timeouts fail the
  launch with "timed out waiting for response" or "... initialization to complete" (exit 2).
  A launch that failed or timed out can leave the instance behind.
- Failures print "<command> failed: <message>" on stderr and exit 2. A daemon that does not
  answer gives "cannot connect to the multipass socket", also exit 2: the client turns gRPC's
  UNAVAILABLE into NOT_FOUND before its failure handler (include/multipass/cli/command.h), which
  would exit 3 for UNAVAILABLE only (src/client/common/client_common.cpp).
- The client (launch.cpp) and then the daemon (src/utils/yaml_node_utils.cpp) load the
  cloud-config and dump it again with yaml-cpp, which drops the quotes of strings
  (canonical/multipass#4176); components/cloudinit.py renders it to mean the same regardless.
- `info <name> --format json` prints {"errors": [], "info": {<name>: {"state": "Running",
  "ipv4": [...], ...}}} (src/client/cli/formatter/json_formatter.cpp); for an unknown name it
  prints nothing on stdout and `info failed: ... instance "<name>" does not exist` on stderr.
- `info` of an instance deleted without `--purge` prints it with state "Deleted"; its name stays
  taken: `launch` with it fails with `instance "<name>" already exists` until it is purged
  (src/daemon/daemon.cpp, launch).
- `delete --purge` removes an instance at once, also one already deleted without --purge; an
  unknown name fails like info does.
- `start <name>` boots a stopped (or suspended) instance and returns once it is up; on a running
  one it does nothing.
- `version` exits 0 even when the daemon is down: only the line `multipassd` is then missing.
- `exec <name> -- <command>` runs the command over SSH as the image's default user (`ubuntu`,
  with sudo) and connects the client's stdin to it (src/ssh/ssh_client.cpp, handle_ssh_events),
  so an in-place update sends the new cloud-config there; it exits with the command's status.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from agentfleet.throttle import held_for
from components.reconciled import Driver
from components.hostkey import HostKeyTimeout, wait_for_host_key
from components.process import run, tail
from components.reapply import update_plan

GUEST_SSH_PORT = 22
DEFAULT_IMAGE = "lts"
# First boots download the image and install packages (git) in the guest: give them time.
LAUNCH_TIMEOUT_S = 900
# After launch returned, cloud-init is done; sshd restarting with the pinned key is quick.
READY_TIMEOUT_S = 120
COMMAND_TIMEOUT_S = 120  # info and delete
# `multipass start` waits for the boot itself (its own timer: 300 s); a little more on top.
START_TIMEOUT_S = 360
INSTANCE_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
DAEMON_LOG_HINT = "the daemon's log (`journalctl --unit 'snap.multipass*'` on Linux)"


class MultipassError(Exception):
    """Multipass failed or answered something agentfleet cannot use; the message says what to do."""


# --- commands -----------------------------------------------------------------------------------


def launch_argv(
    instance: str,
    cpus: float,
    memory_mib: int,
    disk_gib: int,
    image: Optional[str] = None,
    timeout_s: int = LAUNCH_TIMEOUT_S,
) -> list[str]:
    """`multipass launch` for one agent; the cloud-config goes on its stdin (`--cloud-init -`).

    Multipass takes whole CPUs only: a fractional count is rounded up.
    """
    whole_cpus = max(1, int(-(-cpus // 1)))
    return [
        "multipass", "launch",
        "--name", instance,
        "--cpus", str(whole_cpus),
        "--memory", f"{memory_mib}M",
        "--disk", f"{disk_gib}G",
        "--timeout", str(timeout_s),
        "--cloud-init", "-",
        image or DEFAULT_IMAGE,
    ]


def start_argv(instance: str) -> list[str]:
    return ["multipass", "start", instance]


def info_argv(instance: str) -> list[str]:
    return ["multipass", "info", instance, "--format", "json"]


def exec_argv(instance: str, command: Sequence[str]) -> list[str]:
    return ["multipass", "exec", instance, "--", *command]


def delete_argv(instance: str) -> list[str]:
    return ["multipass", "delete", "--purge", instance]


def instance_name_problem(instance: str) -> Optional[str]:
    """Why Multipass would refuse this instance name, or None when it is valid."""
    if INSTANCE_NAME.match(instance):
        return None
    return (
        f"{instance!r} is not a Multipass instance name (letters, digits and hyphens, starting "
        "with a letter, at most 63): use a stack name made of letters, digits and hyphens"
    )


# --- outputs ------------------------------------------------------------------------------------


def parse_info(json_text: str, name: str, port: int = GUEST_SSH_PORT) -> dict:
    """The endpoint {"host", "port"} of a running instance from `multipass info --format json`."""
    try:
        document = json.loads(json_text)
    except ValueError as error:
        raise MultipassError(f"`multipass info {name}` printed no JSON ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("info"), dict):
        raise MultipassError(f"`multipass info {name}` printed JSON without an `info` mapping")
    errors = [str(e) for e in document.get("errors") or [] if e]
    instance = document["info"].get(name)
    if not isinstance(instance, dict):
        detail = f": {'; '.join(errors)}" if errors else ""
        raise MultipassError(f"`multipass info` reports no instance {name}{detail}")
    state = instance.get("state")
    if state != "Running":
        raise MultipassError(f"instance {name} is {state or 'in an unknown state'}, not Running")
    addresses = [a for a in instance.get("ipv4") or [] if _is_ipv4(a)]
    if not addresses:
        raise MultipassError(f"instance {name} is Running but has no IPv4 address yet")
    return {"host": addresses[0], "port": port}


def _is_ipv4(value: object) -> bool:
    try:
        ipaddress.IPv4Address(str(value))
        return True
    except ValueError:
        return False


def daemon_answers(version_stdout: str) -> bool:
    """`multipass version` lists `multipassd` only when the daemon answered."""
    return any(line.split()[:1] == ["multipassd"] for line in version_stdout.splitlines())


def is_missing_instance(stderr: str) -> bool:
    return bool(re.search(r'instance ["\'][^"\']+["\'] does not exist', stderr))


def _quoted_instance(stderr: str) -> Optional[str]:
    match = re.search(r'instance ["\']([^"\']+)["\']', stderr)
    return match.group(1) if match else None


def explain_error(stderr: str) -> str:
    """One sentence that says what to do about a Multipass failure, from its stderr."""
    text = stderr.lower()
    instance = _quoted_instance(stderr) or "the instance"
    if text.strip() == "multipass not found":  # what components.process.run says
        return "multipass is not installed here: install it (`sudo snap install multipass`)."
    if "cannot connect to the multipass socket" in text:
        return (
            "The Multipass daemon is not running or its socket is unavailable: start it "
            "(`sudo snap start multipass` on Linux) and check that `multipass version` lists multipassd."
        )
    if "multipass socket access denied" in text:
        return (
            "This user may not use the Multipass socket: run as a member of the group that owns it "
            "(sudo, admin or wheel on Linux)."
        )
    if "not authenticated with the multipass service" in text:
        return "This client is not authenticated with the Multipass daemon: run `multipass authenticate`."
    if "timed out" in text or "did not return within" in text:
        return (
            "The VM did not boot and finish cloud-init within the launch timeout; first boots that "
            "download the image are slow: run `pulumi up` again (the image is cached by then), and "
            f"read {DAEMON_LOG_HINT} if it keeps timing out."
        )
    if "already exists" in text:
        return (
            f"An instance named {instance} exists but is not in this stack's state (left from an "
            f"earlier run?): remove it with `multipass delete --purge {instance}` and run `pulumi up` again."
        )
    if is_missing_instance(stderr):
        return f"Multipass has no instance {instance} (deleted outside agentfleet?): see `multipass list`."
    if "unable to find an image" in text:
        return (
            "Multipass does not know the agent's `image`: use an alias that `multipass find` lists "
            "(e.g. lts, 24.04) or a file:// or https:// image URL."
        )
    if re.search(r"invalid (memory|disk) size|invalid cpu count", text):
        return (
            "Multipass refused the agent's `resources`: v1.16 needs whole CPUs, at least 128M of "
            "memory and 512M of disk (its main branch, in no release yet, raises these to 512M and 1G)."
        )
    if "invalid instance name" in text:
        return "Multipass refused the instance name: use a stack name made of letters, digits and hyphens."
    if "could not load cloud-init configuration" in text:
        return "Multipass could not read the cloud-config on stdin: report this agentfleet bug with the message above."
    return f"See Multipass' message above; `multipass list` and {DAEMON_LOG_HINT} tell more."


def parse_state(json_text: str, name: str, port: int = GUEST_SSH_PORT) -> dict[str, Any]:
    """What refresh keeps of an instance: its state (lowercase), its port, and its first IPv4
    address when it has one (a stopped VM has none: the last known address stays in the state)."""
    try:
        instance = json.loads(json_text)["info"][name]
        state = str(instance.get("state") or "unknown")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise MultipassError(f"`multipass info {name}` printed no usable JSON") from None
    addresses = [a for a in instance.get("ipv4") or [] if _is_ipv4(a)]
    return {"state": state.lower(), "port": port, **({"host": addresses[0]} if addresses else {})}


# --- the driver ---------------------------------------------------------------------------------


def create(
    agent: str,
    instance: str,
    host_public_key: str,
    launch: Sequence[str],
    cloud_config: str,
    ready_timeout_s: float = READY_TIMEOUT_S,
    ssh_port: int = GUEST_SSH_PORT,
) -> dict:
    """Launch, read the endpoint, wait for the pinned key; on failure purge and raise."""
    where = f"agent {agent} (Multipass instance {instance})"
    if not cloud_config.strip():
        raise MultipassError(f"{where}: no cloud-config on stdin; nothing was launched")
    if shutil.which(launch[0]) is None:
        raise MultipassError(f"{where}: {explain_error(f'{launch[0]} not found')} Nothing was launched.")
    if (instance_state(agent, instance) or {}).get("state") == "deleted":
        # Deleted without --purge: gone for agentfleet (refresh reads it so), but Multipass keeps
        # its name taken until it is purged.
        delete(agent, instance)
    timeout_s = int(launch[launch.index("--timeout") + 1]) if "--timeout" in launch else LAUNCH_TIMEOUT_S
    launched = run(launch, cloud_config, timeout_s + 60)  # Multipass' own timer fires first
    if not launched.ok:
        if "already exists" in launched.stderr.lower():
            # Not made by this run: it may hold someone's work, so it is left alone.
            advice = explain_error(launched.stderr)
            raise MultipassError(f"{tail(launched.stderr)}\n{where}: launch failed. {advice}")
        raise _failed(where, "launch failed", launched.stderr, instance)
    info = run(info_argv(instance), timeout_s=COMMAND_TIMEOUT_S)
    if not info.ok:
        raise _failed(where, "launched, but `multipass info` failed", info.stderr, instance)
    try:
        endpoint = parse_info(info.stdout, instance, ssh_port)
        wait_for_host_key(endpoint["host"], endpoint["port"], host_public_key, ready_timeout_s)
    except (MultipassError, HostKeyTimeout) as error:
        raise _failed(where, str(error), "", instance) from None
    return endpoint


def _failed(where: str, what: str, stderr: str, instance: str) -> MultipassError:
    """Purge the half-made instance; the error says what failed, what to do, and the cleanup."""
    purged = run(delete_argv(instance), timeout_s=COMMAND_TIMEOUT_S)
    if purged.ok:
        cleanup = "The half-made instance was purged."
    elif is_missing_instance(purged.stderr):
        # A launch whose client timer fired may still be preparing the instance in the daemon.
        cleanup = (
            f"Multipass had no instance to purge yet: if `multipass list` later shows {instance}, "
            f"remove it with `multipass delete --purge {instance}`."
        )
    else:
        cleanup = (
            f"The half-made instance could not be purged ({tail(purged.stderr, 2)}): if "
            f"`multipass list` shows {instance}, remove it with `multipass delete --purge {instance}`."
        )
    advice = f" {explain_error(stderr)}" if stderr else ""
    shown = f"{tail(stderr)}\n" if stderr else ""
    return MultipassError(f"{shown}{where}: {what}.{advice} {cleanup}")


def start(agent: str, instance: str, host_public_key: str, ready_timeout_s: float = READY_TIMEOUT_S,
          ssh_port: int = GUEST_SSH_PORT) -> dict:
    """Boot a stopped instance, read its (maybe new) address, wait for the pinned key. A failure
    leaves the VM as it is: its disk holds the agent's workspace."""
    where = f"agent {agent} (Multipass instance {instance})"
    started = run(start_argv(instance), timeout_s=START_TIMEOUT_S)
    if not started.ok:
        raise MultipassError(f"{tail(started.stderr)}\n{where}: start failed. {explain_error(started.stderr)}")
    info = run(info_argv(instance), timeout_s=COMMAND_TIMEOUT_S)
    try:
        if not info.ok:
            raise MultipassError(f"`multipass info` failed ({tail(info.stderr, 2)}). {explain_error(info.stderr)}")
        endpoint = parse_info(info.stdout, instance, ssh_port)
        wait_for_host_key(endpoint["host"], endpoint["port"], host_public_key, ready_timeout_s)
    except (MultipassError, HostKeyTimeout) as error:
        raise MultipassError(f"{where}: started, but {error}") from None
    return endpoint


def delete(agent: str, instance: str) -> None:
    """Purge the instance; one that no longer exists is already what delete wants."""
    deleted = run(delete_argv(instance), timeout_s=COMMAND_TIMEOUT_S)
    if deleted.ok or is_missing_instance(deleted.stderr):
        return
    raise MultipassError(
        f"{tail(deleted.stderr)}\nagent {agent} (Multipass instance {instance}): delete failed. "
        f"{explain_error(deleted.stderr)}"
    )


def apply_in_place(agent: str, instance: str, user_data: str) -> None:
    """Apply a changed cloud-config to the running VM: components/reapply.py's script as root,
    the document on stdin (`multipass exec`), never in argv."""
    applied = run(exec_argv(instance, ["sudo", *update_plan(user_data).argv("-", scrub=True)]),
                  user_data, COMMAND_TIMEOUT_S * 5)
    if not applied.ok:
        raise MultipassError(f"{tail(applied.stderr)}\nagent {agent} (Multipass instance {instance}): applying "
                             f"the new cloud-config failed. {explain_error(applied.stderr)}")


def instance_state(agent: str, instance: str, ssh_port: int = GUEST_SSH_PORT) -> Optional[dict[str, Any]]:
    """What Multipass says of the instance (`parse_state`); None when it has no such instance."""
    info = run(info_argv(instance), timeout_s=COMMAND_TIMEOUT_S)
    if not info.ok:
        if is_missing_instance(info.stderr):
            return None
        raise MultipassError(f"{tail(info.stderr)}\nagent {agent} (Multipass instance {instance}): "
                             f"info failed. {explain_error(info.stderr)}")
    return parse_state(info.stdout, instance, ssh_port)


@dataclass(frozen=True)
class VmDriver(Driver):
    """An agent's Multipass VM. A stopped VM is started in place and a changed cloud-config is
    applied to the running VM; a change of the launch flags, packages or pinned key replaces it.
    Its disk holds the workspace.

    `ssh_port` is where the guest's sshd listens and `ready_timeout_s` bounds the wait for its
    pinned key; the provider uses the defaults, tests point them at a throwaway sshd."""

    ready_timeout_s: float = READY_TIMEOUT_S
    ssh_port: int = GUEST_SSH_PORT

    replacing = frozenset({"name", "agent", "launch", "packages", "host_public_key"})
    changing = frozenset({"state"})
    secret_input = "the agent's cloud-config, given to `multipass launch --cloud-init -`"
    outputs = frozenset({"host", "port"})
    hints = frozenset({"forge_gate"})

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        with held_for(fields.get("forge_gate")):  # the launch's boot makes the first clone
            endpoint = create(fields["agent"], name, fields["host_public_key"], fields["launch"], secret or "",
                              self.ready_timeout_s, self.ssh_port)
        return {**endpoint, "state": "running"}

    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        """None when the instance is gone, also when it was deleted without --purge."""
        state = instance_state(fields["agent"], name, self.ssh_port)
        return None if state is None or state["state"] == "deleted" else state

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        if self.read(name, fields) is None:
            return self.create(name, fields, secret)
        endpoint = start(fields["agent"], name, fields["host_public_key"], self.ready_timeout_s, self.ssh_port)
        apply_in_place(fields["agent"], name, secret or "")
        return {**endpoint, "state": "running"}

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        delete(fields["agent"], name)
