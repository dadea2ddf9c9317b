"""Lima VMs for agents through limactl: created, read back, started again, deleted.

create: `limactl create` from the instance config, `limactl start`, read the SSH port Lima
forwards (`limactl list --json`), wait until the guest's boot has finished (`wait_for_boot`), hand
the agent's cloud-config to cloud-init inside the VM over Lima's own SSH session, and wait until
sshd offers the pinned host key. On any failure after `limactl create` the half-made instance is
deleted, and the message names the agent, what failed and what to do. read: the instance's status
and forwarded port (a stopped VM, as after every host reboot, reads as stopped and `pulumi up`
starts it, with the same waits). delete: `limactl delete --force`; an instance that is already
gone counts as deleted.

Why the cloud-config travels this way: Lima writes its own cloud-init user-data (its user, its
key, its boot script) and takes no other. So the VM boots with Lima's, and the agent's document
is then applied by cloud-init itself, every module the document uses in one `cloud-init modules`
run (see backend.py for which). The document goes through `limactl shell`'s
stdin (ssh) to a root-only file on the guest's tmpfs, removed once applied: it is never in argv,
in the environment, or in a file on the host.

Why the boot wait: `limactl start` returns once Lima's own per-boot script has run, the first of
cloud-init's final stage. The rest of that stage still runs: at every boot after the first, the
agent's per-boot egress script, which loads the egress policy with the name servers and starts the
resolver (the table itself is loaded before sshd by a unit that script installs, but names resolve
only after it). On a VM whose first boot predates that unit, a connection to sshd accepted before
the load is not tracked by netfilter, and its next packet out of the VM is rejected: a client
connecting then reads no SSH banner or loses its session, and a `limactl shell` open across the
load never returns (as measured here). Once cloud-init's boot has finished, the agent is whole.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from agentfleet.throttle import held_for
from components.reconciled import Driver
from components.hostkey import HostKeyTimeout, wait_for_host_key
from components.process import NOT_FOUND, TIMED_OUT, run, tail
from components.reapply import TRACK_SESSION, Plan, update_plan

LIST_TIMEOUT_S = 60
DELETE_TIMEOUT_S = 120
# Slack on top of `limactl start --timeout` for Lima to give up and report by itself.
START_GRACE_S = 60
APPLY_TIMEOUT_S = 600
RUNNER = "agentfleet-lima"
# Measured here under TCG (2 host cores): boot to Lima's SSH ~65 s, applying the document ~20 s.
# Generous, because agents of one stack boot in parallel on the same cores.
START_TIMEOUT_S = 900
READY_TIMEOUT_S = 120
# The rest of cloud-init's boot after `limactl start`: measured here ~2 s on the first boot, 13 s
# on later ones (the egress script), 37 s with the host loaded. Each `limactl shell` of the wait
# waits at most BOOT_POLL_S in the guest, and BOOT_GRACE_S more on the host.
BOOT_TIMEOUT_S = 300
BOOT_POLL_S = 30
BOOT_GRACE_S = 20
# AF_UNIX socket paths (Lima's ha.sock, ssh.sock in the instance directory) are at most 107 bytes.
MAX_SOCKET_PATH = 107
LONGEST_SOCKET = "ha.sock"

class LimaError(Exception):
    """One line for the operator: agent, what failed, what to do; optional detail lines below."""


class LimaTimeout(LimaError):
    """A limactl command did not return in time."""


# ---------------------------------------------------------------------------------------------
# Pure functions: reading Lima's outputs


def parse_list(stdout: str) -> list[dict[str, Any]]:
    """`limactl list --json`: one JSON object per line, one line per instance (none: no output)."""
    instances = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        value = json.loads(line)
        if isinstance(value, list):  # tolerate a JSON array, as some versions print
            instances.extend(value)
        else:
            instances.append(value)
    return instances


def find_instance(stdout: str, name: str) -> dict[str, Any] | None:
    return next((i for i in parse_list(stdout) if i.get("name") == name), None)


def ssh_endpoint(instance: dict[str, Any]) -> dict[str, Any]:
    """Where Lima forwards the guest's sshd: its sshAddress (127.0.0.1) and sshLocalPort."""
    status = instance.get("status")
    port = instance.get("sshLocalPort") or 0
    if status != "Running" or not isinstance(port, int) or port <= 0:
        raise LimaError(f"instance {instance.get('name')} is {status} with SSH port {port!r}, not running with a forwarded port")
    return {"host": instance.get("sshAddress") or "127.0.0.1", "port": port}


def socket_path_problem(lima_home: str, instance: str) -> str | None:
    """Lima keeps sockets in the instance directory; too long a path fails late and obscurely."""
    path = os.path.join(lima_home, instance, LONGEST_SOCKET)
    if len(path.encode()) > MAX_SOCKET_PATH:
        return (f"the Lima instance path {path} is {len(path.encode())} bytes, over the {MAX_SOCKET_PATH} "
                "a socket path may have: use a shorter stack or agent name, or a shorter AGENTFLEET_LIMA_DIR")
    return None


HINTS = (
    ("must not run as the root user",
     "limactl refuses root: call it through the wrapper scripts/setup installs (it runs Lima as agentfleet-lima)"),
    ('exec: "qemu-system-x86_64": executable file not found',
     "qemu is missing: apt-get install qemu-system-x86 qemu-utils (or run scripts/setup)"),
    ("Could not access KVM kernel module",
     "qemu cannot use KVM here: set AGENTFLEET_LIMA_ACCEL=tcg (or run scripts/setup, which probes KVM)"),
    ("failed to set MSR",
     "KVM does not work on this machine: set AGENTFLEET_LIMA_ACCEL=tcg (or delete the accel file and run scripts/setup)"),
    ("Could not set up host forwarding rule",
     "the agent's SSH port is taken on 127.0.0.1: free it or give the agent another ssh_port"),
    ("did not receive an event with the",
     "the VM did not boot to SSH in time; under software emulation (TCG) give it more time or more cpus"),
    ("already exists",
     "an instance of that name exists: remove it with `limactl delete --force` and its name"),
    ("guest agent binary could not be found",
     "Lima's guest agent is missing: run scripts/setup (it builds limactl with its guest agent)"),
)


def explain(output: str) -> str | None:
    """What to do about a recorded limactl failure, when its output says."""
    return next((hint for marker, hint in HINTS if marker in output), None)


def readable_log(text: str) -> str:
    """Lima's host agent log (ha.stderr.log) is JSON lines: keep level and message (and error)."""
    lines = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            lines.append(line)
            continue
        if isinstance(entry, dict) and "msg" in entry:
            error = f" ({entry['error']})" if entry.get("error") else ""
            lines.append(f"{entry.get('level', '?')}: {entry['msg']}{error}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Commands


class Lima:
    """limactl for one agent's instance; every failure becomes a LimaError naming the agent."""

    def __init__(self, limactl: str, agent: str, instance: str) -> None:
        self.limactl = limactl
        self.agent = agent
        self.instance = instance

    def run(self, *args: str, stdin: str | None = None, timeout: float = LIST_TIMEOUT_S,
            what: str = "") -> str:
        done = run([self.limactl, "--tty=false", *args], stdin=stdin or "", timeout_s=timeout)
        if done.status == NOT_FOUND and shutil.which(self.limactl) is None:
            raise LimaError(f"limactl is missing ({self.limactl}): run scripts/setup, which builds Lima from Go modules")
        if done.status == TIMED_OUT:
            raise LimaTimeout(f"`limactl {args[0]}` did not finish within {timeout:.0f}s" +
                              (f"; {what}" if what else ""), tail(done.stderr))
        if not done.ok:
            output = done.stderr or done.stdout
            hint = explain(output)
            raise LimaError(f"`limactl {args[0]}` exited {done.status}" + (f": {hint}" if hint else ""),
                            tail(output))
        return done.stdout

    def instance_info(self) -> dict[str, Any] | None:
        return find_instance(self.run("list", "--json"), self.instance)

    def delete(self) -> None:
        try:
            self.run("delete", "--force", self.instance, timeout=DELETE_TIMEOUT_S)
        except LimaError:
            if self.instance_info() is not None:
                raise

    def diagnostics(self) -> tuple[str, str | None]:
        """The ends of Lima's host agent log and the guest's console, when there are any, and
        what to do when the host agent's log says (it often knows more than `limactl start`)."""
        try:
            info = self.instance_info()
        except (LimaError, ValueError):
            return "", None
        parts, hint = [], None
        for log in ("ha.stderr.log", "serial.log"):
            path = Path(str((info or {}).get("dir", ""))) / log
            try:
                text = readable_log(path.read_text(errors="replace"))
            except OSError:
                continue
            hint = hint or explain(text)
            parts.append(f"--- {path} (last lines)\n{tail(text, 12)}")
        return "\n".join(parts), hint


def lima_dir() -> Path:
    """Where scripts/setup installs Lima (the same rule as scripts/lib/lima.sh)."""
    if os.environ.get("AGENTFLEET_LIMA_DIR"):
        return Path(os.environ["AGENTFLEET_LIMA_DIR"])
    if os.geteuid() == 0:
        return Path("/var/lib/agentfleet/lima")
    return Path(os.environ.get("AGENTFLEET_HOME") or Path.home() / ".agentfleet") / "lima"


def limactl_command(directory: Path | None = None) -> str | None:
    """The wrapper scripts/setup writes (TCG where KVM fails, unprivileged for root), else PATH's."""
    wrapper = (directory or lima_dir()) / "bin" / "limactl"
    if os.access(wrapper, os.X_OK):
        return str(wrapper)
    return shutil.which("limactl")


def lima_home(limactl: str, directory: Path | None = None) -> str:
    """The LIMA_HOME the instances live in: the wrapper's, else Lima's own default."""
    base = directory or lima_dir()
    if limactl == str(base / "bin" / "limactl"):
        return str(base / "instances")
    return os.environ.get("LIMA_HOME") or str(Path.home() / ".lima")


def create(lima: Lima, host_public_key: str, config: str, steps: str, scripts: Sequence[str],
           document: str, ready_timeout_s: float = READY_TIMEOUT_S,
           boot_timeout_s: float = BOOT_TIMEOUT_S, forge_gate: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Make, boot and provision the VM; return its endpoint. A failure deletes the half-made VM.
    The document's first clone runs while a slot of `forge_gate` is held."""
    if not os.access(lima.limactl, os.X_OK):
        raise LimaError(f"limactl is missing ({lima.limactl}): run scripts/setup, which builds Lima from Go modules")
    if shutil.which("qemu-system-x86_64") is None:
        raise LimaError("qemu-system-x86_64 is missing: apt-get install qemu-system-x86 qemu-utils (or run scripts/setup)")
    if lima.instance_info() is not None:
        raise LimaError(f"a Lima instance {lima.instance} exists already, unknown to this stack (left by an "
                        f"interrupted run?): remove it with `{lima.limactl} delete --force {lima.instance}`")
    lima.run("create", "--name", lima.instance, "-", stdin=config, what="creating the instance")
    try:
        endpoint = start(lima, host_public_key, ready_timeout_s, apply=(Plan(steps, (), tuple(scripts)), document),
                         boot_timeout_s=boot_timeout_s, forge_gate=forge_gate)
    except (LimaError, ValueError, HostKeyTimeout) as error:
        message = error.args[0]
        detail = error.args[1] if len(error.args) > 1 else ""
        diagnostics, hint = lima.diagnostics()
        if hint and hint not in message:
            message = f"{message}: {hint}"
        try:
            lima.delete()
            cleanup = "the half-made VM was deleted"
        except LimaError as delete_error:
            cleanup = (f"deleting the half-made VM failed too ({delete_error.args[0]}): "
                       f"`{lima.limactl} delete --force {lima.instance}`")
        raise LimaError(f"{message}; {cleanup}", "\n".join(p for p in (detail, diagnostics) if p)) from None
    return endpoint


def start(lima: Lima, host_public_key: str, ready_timeout_s: float,
          apply: Optional[tuple[Plan, str]] = None, boot_timeout_s: float = BOOT_TIMEOUT_S,
          forge_gate: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Boot the VM, wait for its boot to finish, apply a cloud-config (`apply`: plan, document;
    holding a slot of `forge_gate` meanwhile), and wait for the pinned host key; return the endpoint."""
    lima.run("start", "--timeout", f"{START_TIMEOUT_S}s", lima.instance, timeout=START_TIMEOUT_S + START_GRACE_S,
             what="the VM did not boot to SSH in time")
    info = lima.instance_info()
    if info is None:
        raise LimaError("the instance vanished after `limactl start`")
    endpoint = ssh_endpoint(info)
    wait_for_boot(lima, boot_timeout_s)
    if apply is not None:
        with held_for(forge_gate):
            apply_document(lima, *apply)
    wait_for_host_key(endpoint["host"], endpoint["port"], host_public_key, ready_timeout_s)
    return endpoint


# Run by root in the guest: $1 seconds at most for cloud-init's boot to finish, then the state of
# its last stage, cloud-final.service (a oneshot: "active" once it has run, "failed" when a module
# or script failed). Asking systemd takes 0.2 s under emulation, `cloud-init status` 4-5 s. The
# session is tracked first (reapply.TRACK_SESSION): it may be open while the boot loads the policy.
BOOT_WAIT = TRACK_SESSION + r"""echo "agentfleet: waiting for cloud-init's boot to finish" >&2
end=$(($(date +%s) + $1))
while state=$(systemctl show --property ActiveState --value cloud-final.service); do
    case $state in active | failed) break ;; esac
    [ "$(date +%s)" -lt "$end" ] || break
    sleep 1
done
echo "cloud-final: $state"
[ "$state" != failed ] || cloud-init status --long
"""


def boot_state(output: str) -> str:
    """The state of cloud-final.service that BOOT_WAIT printed ("active", "activating", …)."""
    return next((line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith("cloud-final:")),
                "") or "unknown"


def wait_for_boot(lima: Lima, timeout_s: float = BOOT_TIMEOUT_S, poll_s: float = BOOT_POLL_S) -> None:
    """Return once cloud-init's boot in the VM has finished; raise if it failed or outlasts timeout_s.
    A `limactl shell` that does not return (its session opened just as the boot loaded the egress
    policy, before TRACK_SESSION ran) is given up after poll_s and the next one asks again: its
    request reaches the guest after the load, so netfilter tracks that session from then on."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = max(1.0, deadline - time.monotonic())
        wait = min(poll_s, left)
        try:
            output = lima.run("shell", "--workdir", "/", lima.instance, "sudo", "sh", "-c", BOOT_WAIT,
                              "agentfleet-boot", f"{wait:.0f}", timeout=wait + BOOT_GRACE_S)
        except LimaTimeout:
            output = ""
        state = boot_state(output)
        if state == "active":
            return
        if state == "failed":
            raise LimaError("cloud-init's boot in the VM failed (cloud-final.service failed): see "
                            "/var/log/cloud-init.log in the VM (`limactl shell`)", output.strip())
        if time.monotonic() >= deadline:
            raise LimaError(f"cloud-init's boot in the VM did not finish within {timeout_s:.0f}s after "
                            f"`limactl start` (cloud-final.service: {state})", output.strip())


def apply_document(lima: Lima, plan: Plan, document: str) -> None:
    """Apply the cloud-config in the running VM as root, the document on the stdin of Lima's own
    SSH session (components/reapply.py); a document applied already is left as it is."""
    lima.run("shell", "--workdir", "/", lima.instance, "sudo", *plan.argv("-", scrub=False), stdin=document,
             timeout=APPLY_TIMEOUT_S, what="applying the cloud-config took too long")


@dataclass(frozen=True)
class VmDriver(Driver):
    """An agent's Lima VM. A stopped VM is started in place, and a changed cloud-config is
    applied to the running VM (components/reapply.py); a change of the instance config, the
    module list, the packages or the pinned key replaces it. Its disk holds the workspace.
    `boot_timeout_s` bounds the wait for cloud-init's boot once Lima says the VM is up,
    `ready_timeout_s` the wait for the pinned key after that."""

    ready_timeout_s: float = READY_TIMEOUT_S
    boot_timeout_s: float = BOOT_TIMEOUT_S

    replacing = frozenset({"name", "agent", "config", "steps", "scripts", "packages", "host_public_key"})
    changing = frozenset({"state"})
    secret_input = "the agent's cloud-config, applied by cloud-init in the VM"
    hints = frozenset({"forge_gate"})
    outputs = frozenset({"host", "port"})

    @staticmethod
    def _lima(name: str, fields: dict[str, Any]) -> Lima:
        return Lima(limactl_command() or "limactl", fields["agent"], name)

    @staticmethod
    def _failed(name: str, fields: dict[str, Any], error: Exception) -> LimaError:
        """The error as Pulumi shows it: Lima's detail lines, then one line naming the agent."""
        detail = error.args[1] if len(error.args) > 1 else ""
        return LimaError(f"{detail}\nagent {fields['agent']} (Lima VM {name}): {error.args[0]}".strip())

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        try:
            endpoint = create(self._lima(name, fields), fields["host_public_key"], fields["config"],
                              fields["steps"], fields["scripts"], secret or "", self.ready_timeout_s,
                              self.boot_timeout_s, fields.get("forge_gate"))
        except (LimaError, ValueError) as error:
            raise self._failed(name, fields, error) from None
        return {**endpoint, "state": "running"}

    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        """None when the instance is gone; else its state ("running", "stopped", "broken") and
        the port Lima forwards (also listed for a stopped VM: it is the agent's ssh_port)."""
        try:
            info = self._lima(name, fields).instance_info()
        except (LimaError, ValueError) as error:
            raise self._failed(name, fields, error) from None
        if info is None:
            return None
        return {"state": str(info.get("status") or "unknown").lower(),
                "host": info.get("sshAddress") or "127.0.0.1", "port": info.get("sshLocalPort") or 0}

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        current = self.read(name, fields)
        if current is None:
            return self.create(name, fields, secret)
        try:
            lima = self._lima(name, fields)
            document = secret or ""
            if current["state"] != "running":
                endpoint = start(lima, fields["host_public_key"], self.ready_timeout_s,
                                 apply=(update_plan(document), document), boot_timeout_s=self.boot_timeout_s)
            else:
                apply_document(lima, update_plan(document), document)
                endpoint = ssh_endpoint(lima.instance_info() or {})
                wait_for_host_key(endpoint["host"], endpoint["port"], fields["host_public_key"],
                                  self.ready_timeout_s)
        except (LimaError, ValueError, HostKeyTimeout) as error:
            raise self._failed(name, fields, error) from None
        return {**endpoint, "state": "running"}

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        try:
            self._lima(name, fields).delete()
        except (LimaError, ValueError) as error:
            raise self._failed(name, fields, error) from None
