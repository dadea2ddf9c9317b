"""How one agent becomes a Lima VM: the instance config from the spec, the cloud-config applied by
cloud-init inside the VM, the SSH endpoint Lima forwards; `limactl delete --force` on destroy.

Why these choices (see DESIGN.md):
- Lima runs in plain mode: no mounts, no guest agent, no automatic forwarding of every guest port
  to the host (which would mix agents' ports); the VM is reached over SSH only, on the agent's
  own port (`ssh.localPort`), bound to 127.0.0.1 by Lima.
- Lima writes its own cloud-init user-data. The agent's document (secret, on stdin) is applied
  afterwards by cloud-init itself: the modules its keys need, in cloud-init's own order, in one
  `cloud-init modules` run (`apply_steps`), then the per-boot scripts it installs. driver.py
  carries it over Lima's SSH session; it is never in argv, environment or a host file.
- Without an `image`, the VM boots the image scripts/setup builds from Debian packages
  (images/lima/build-vm-image), found by the hash of that recipe, with its own kernel and initrd
  (no bootloader). With `image`, Lima takes that location (a path or URL of a cloud image).
- limactl is the wrapper scripts/setup writes ($AGENTFLEET_LIMA_DIR/bin/limactl): it forces
  software emulation where KVM does not work and runs Lima unprivileged when called by root.
  Without it, `limactl` on PATH (a Lima you installed) is used as it is.
- The VM is a `Reconciled` resource driven by driver.VmDriver: its inputs are the instance
  config and the module list, so editing agentfleet's code replaces no VM; refresh reads the
  instance's status, and `pulumi up` starts a stopped VM instead of rebuilding it.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml

from components.backends import Endpoint, MachineContext
from components.backends.lima.driver import RUNNER, lima_dir, lima_home, limactl_command, socket_path_problem
from components.reapply import in_place_fields, per_boot_scripts, steps_document
from components.reconciled import Reconciled
from components.spec import AgentSpec, FleetSpec

PROJECT_ROOT = Path(__file__).resolve().parents[3]
RECIPE = PROJECT_ROOT / "images" / "lima" / "build-vm-image"
# Lima's own user in the guest; not uid 1000, which the document gives to `agent`.
LIMA_USER = {"name": "lima", "uid": 1001}

# The cloud-config keys each module reads, in the order cloud-init runs those modules at boot
# (init, config, final stages). A key no module here claims is refused by `apply_steps`, so a
# template change cannot silently go unapplied on Lima.
MODULE_KEYS: tuple[tuple[str, frozenset[str]], ...] = (
    ("bootcmd", frozenset({"bootcmd"})),
    ("write_files", frozenset()),  # write_files entries without `defer`
    ("users_groups", frozenset({"users", "groups"})),
    ("ssh", frozenset({"ssh_keys", "ssh_authorized_keys", "ssh_deletekeys", "ssh_genkeytypes",
                       "disable_root", "disable_root_opts", "ssh_publish_hostkeys", "ssh_quiet_keygen",
                       "allow_public_ssh_keys"})),
    ("set_passwords", frozenset({"ssh_pwauth", "chpasswd", "password"})),
    ("runcmd", frozenset({"runcmd"})),
    ("package_update_upgrade_install", frozenset({"packages", "package_update", "package_upgrade",
                                                  "package_reboot_if_required"})),
    ("write_files_deferred", frozenset()),  # write_files entries with `defer: true`
    ("scripts_user", frozenset({"runcmd"})),  # runs the script runcmd wrote
)


@dataclass(frozen=True)
class VmImage:
    """The image scripts/setup builds: a disk without bootloader plus the kernel that boots it."""

    disk: str
    kernel: str
    initrd: str
    cmdline: str


def image_id(recipe: Path = RECIPE) -> str:
    """The image's cache key, as scripts/lib/lima.sh computes it (`sha256sum | cut -c1-16`)."""
    return hashlib.sha256(recipe.read_bytes()).hexdigest()[:16]


def local_image(directory: Path | None = None) -> VmImage | None:
    """The built image for the current recipe, when scripts/setup has finished building it."""
    image = (directory or lima_dir()) / "images" / image_id()
    if not (image / ".complete").exists():
        return None
    return VmImage(disk=str(image / "disk.qcow2"), kernel=str(image / "vmlinuz"),
                   initrd=str(image / "initrd.img"), cmdline=(image / "cmdline").read_text().strip())


def instance_config(agent: AgentSpec, image: VmImage | None) -> dict[str, Any]:
    """Lima's instance config (lima.yaml) for one agent."""
    if agent.image:
        images: list[dict[str, Any]] = [{"location": agent.image, "arch": "x86_64"}]
        firmware: dict[str, Any] = {}
    elif image is not None:
        images = [{
            "location": image.disk,
            "arch": "x86_64",
            "kernel": {"location": image.kernel, "cmdline": image.cmdline},
            "initrd": {"location": image.initrd},
        }]
        firmware = {"legacyBIOS": True}  # the kernel is given: no UEFI firmware to run first
    else:
        raise ValueError(f"agent {agent.name}: no VM image (run scripts/setup, or set `image`)")
    return {
        "vmType": "qemu",
        "os": "Linux",
        "arch": "x86_64",
        # "max" runs under both KVM and TCG; Lima's default "host" needs KVM.
        "cpuType": {"x86_64": "max"},
        "cpus": max(1, math.ceil(agent.resources.cpus)),
        "memory": f"{agent.resources.memory_mib}MiB",
        "disk": f"{agent.resources.disk_gib}GiB",
        "images": images,
        **({"firmware": firmware} if firmware else {}),
        "plain": True,
        "mounts": [],
        "containerd": {"system": False, "user": False},
        "ssh": {"localPort": agent.ssh_port or agent.preferred_port, "loadDotSSHPubKeys": False, "forwardAgent": False},
        "user": dict(LIMA_USER),
        "video": {"display": "none"},
    }


def render_instance_config(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def apply_steps(document: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The cloud-init modules a cloud-config needs, in boot order, and the per-boot scripts it
    installs (run once after the modules: the `scripts_per_boot` module would also re-run
    Lima's own per-boot script). Raises ValueError for a key no module claims."""
    files = document.get("write_files") or []
    claimed = set().union(*(keys for _, keys in MODULE_KEYS)) | {"write_files"}
    unknown = sorted(set(document) - claimed)
    if unknown:
        raise ValueError(
            f"cloud-config keys the Lima backend does not apply: {', '.join(unknown)}; "
            "add their cloud-init module to MODULE_KEYS in components/backends/lima/backend.py"
        )
    wanted = {
        "write_files": any(not f.get("defer") for f in files),
        "write_files_deferred": any(f.get("defer") for f in files),
    }
    modules = [
        module for module, keys in MODULE_KEYS
        if wanted.get(module, False) or any(document.get(key) not in (None, [], {}) for key in keys)
    ]
    return modules, per_boot_scripts(document)


class LimaVm(Reconciled):
    KIND = "LimaVm"
    host: pulumi.Output[str]
    port: pulumi.Output[int]


def vm_fields(context: MachineContext, agent: AgentSpec, image: VmImage | None) -> dict[str, Any]:
    """The VM's inputs that the spec alone defines (the rest come from the cloud-config)."""
    return {
        "name": context.machine_name(agent.name),
        "agent": agent.name,
        "config": render_instance_config(instance_config(agent, image)),
        "state": "running",
        **context.forge_gate(agent),
    }


def step_fields(user_data: str) -> dict[str, Any]:
    """How the cloud-config is applied: module names and script paths, nothing secret, so they
    stay readable inputs (a preview shows when they change)."""
    modules, scripts = apply_steps(yaml.safe_load(user_data))
    return {"steps": steps_document(modules), "scripts": scripts}


class LimaBackend:
    policy_in_machine = True

    def runs_agent_image(self, agent: AgentSpec, context: MachineContext) -> bool:
        return False  # stock cloud images: the shared files travel in the cloud-config

    def missing_tools(self) -> list[str]:
        missing = []
        limactl = limactl_command()
        if limactl is None:
            missing.append("limactl (run scripts/setup: it builds Lima from Go modules, with qemu and the VM image)")
        elif limactl.startswith(str(lima_dir())) and os.geteuid() == 0 and not _user_exists(RUNNER):
            missing.append(f"the user {RUNNER} that runs Lima for root (run scripts/setup)")
        if shutil.which("qemu-system-x86_64") is None:
            missing.append("qemu-system-x86_64 (apt-get install qemu-system-x86 qemu-utils, or run scripts/setup)")
        if limactl is not None and limactl.startswith(str(lima_dir())) and local_image() is None:
            missing.append(f"the Lima VM image {image_id()} (run scripts/setup; or give each Lima agent an `image`)")
        return missing

    def preflight(self, fleet: FleetSpec, agents: list[AgentSpec]) -> list[str]:
        return []  # Lima forwards each VM's SSH port itself and says when one is taken

    def fleet_resources(self, fleet: FleetSpec, context: MachineContext,
                        opts: pulumi.ResourceOptions) -> dict[str, list[pulumi.Resource]]:
        return {}

    def provision(self, agent: AgentSpec, context: MachineContext, user_data: pulumi.Output[str],
                  host_public_key: pulumi.Output[str], opts: pulumi.ResourceOptions) -> pulumi.Output[Endpoint]:
        """The VM (its disk holds the workspace); returns the address its sshd answers on."""
        where = f'stack "{context.stack}", agent "{agent.name}"'
        # Where limactl is missing, preview still shows the plan; the preflight refuses `up`.
        problem = socket_path_problem(lima_home(limactl_command() or "limactl"), context.machine_name(agent.name))
        if problem:
            raise pulumi.RunError(f"{where}: {problem}")
        if agent.retain_workspace:
            pulumi.log.warn(f"{where}: retain_workspace is not supported by the lima backend; "
                            "the VM's disk (its workspace) is deleted with the VM")
        image = None if agent.image else local_image()
        if image is None and not agent.image:
            raise pulumi.RunError(f"{where}: the Lima VM image {image_id()} is not built; run scripts/setup "
                                  "(or give the agent an `image`)")
        steps = pulumi.Output.unsecret(user_data.apply(step_fields))
        vm = LimaVm(f"{agent.name}-vm", {
            **vm_fields(context, agent, image),
            "steps": steps.apply(lambda s: s["steps"]),
            "scripts": steps.apply(lambda s: s["scripts"]),
            "host_public_key": host_public_key,
            **in_place_fields(agent),
        }, secret=user_data, opts=opts)
        return pulumi.Output.all(vm.host, vm.port).apply(lambda v: Endpoint(host=v[0], port=int(v[1]), user_namespace="vm"))


BACKEND = LimaBackend()


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
