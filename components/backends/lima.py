"""How one agent becomes a Lima VM: the instance config from the spec, the cloud-config applied by
cloud-init inside the VM, the SSH endpoint Lima forwards; `limactl delete --force` on destroy.

Why these choices (see DESIGN.md):
- Lima runs in plain mode: no mounts, no guest agent, no automatic forwarding of every guest port
  to the host (which would mix agents' ports); the VM is reached over SSH only, on the agent's
  own port (`ssh.localPort`), bound to 127.0.0.1 by Lima.
- Lima writes its own cloud-init user-data. The agent's document (secret, on stdin) is applied
  afterwards by cloud-init itself: the modules its keys need, in cloud-init's own order, in one
  `cloud-init modules` run (`apply_steps`), then the per-boot scripts it installs. lima_cli.py
  carries it over Lima's SSH session; it is never in argv, environment or a host file.
- Without an `image`, the VM boots the image scripts/setup builds from Debian packages
  (images/lima/build-vm-image), found by the hash of that recipe, with its own kernel and initrd
  (no bootloader). With `image`, Lima takes that location (a path or URL of a cloud image).
- limactl is the wrapper scripts/setup writes ($AGENTFLEET_LIMA_DIR/bin/limactl): it forces
  software emulation where KVM does not work and runs Lima unprivileged when called by root.
  Without it, `limactl` on PATH (a Lima you installed) is used as it is.

The create command names lima_cli.py by its path (LocalCommand runs in the project directory),
so editing the program does not replace every VM; the delete command carries its text, so
`pulumi destroy` works from the state alone.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml

from components.backends import Endpoint, MachineContext, machine
from components.backends.lima_cli import parse_list, socket_path_problem, steps_document  # noqa: F401
from components.spec import AgentSpec

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RECIPE = PROJECT_ROOT / "images" / "lima" / "build-vm-image"
PROGRAM = Path(__file__).resolve().parent / "lima_cli.py"
PROGRAM_PATH = "components/backends/lima_cli.py"  # relative to the project directory
PYTHON = "python3"
RUNNER = "agentfleet-lima"
# Measured here under TCG (2 host cores): boot to Lima's SSH ~65 s, applying the document ~20 s.
# Generous, because agents of one stack boot in parallel on the same cores.
START_TIMEOUT_S = 900
READY_TIMEOUT_S = 120
# Lima's own user in the guest; not uid 1000, which the document gives to `agent`.
LIMA_USER = {"name": "lima", "uid": 1001}
PER_BOOT_DIR = "/var/lib/cloud/scripts/per-boot/"

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


def lima_dir() -> Path:
    """Where scripts/setup installs Lima (the same rule as scripts/lib/lima.sh)."""
    if os.environ.get("AGENTFLEET_LIMA_DIR"):
        return Path(os.environ["AGENTFLEET_LIMA_DIR"])
    if os.geteuid() == 0:
        return Path("/var/lib/agentfleet/lima")
    return Path(os.environ.get("AGENTFLEET_HOME") or Path.home() / ".agentfleet") / "lima"


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


def limactl_command(directory: Path | None = None) -> str | None:
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
        "ssh": {"localPort": agent.ssh_port, "loadDotSSHPubKeys": False, "forwardAgent": False},
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
            "add their cloud-init module to MODULE_KEYS in components/backends/lima.py"
        )
    wanted = {
        "write_files": any(not f.get("defer") for f in files),
        "write_files_deferred": any(f.get("defer") for f in files),
    }
    modules = [
        module for module, keys in MODULE_KEYS
        if wanted.get(module, False) or any(document.get(key) not in (None, [], {}) for key in keys)
    ]
    scripts = sorted(
        (f["path"] for f in files if str(f.get("path", "")).startswith(PER_BOOT_DIR)),
        key=lambda path: path.rsplit("/", 1)[-1],
    )
    return modules, scripts


def machine_commands(
    context: MachineContext,
    agent: AgentSpec,
    host_public_key: str,
    limactl: str,
    config: str,
    modules: Sequence[str],
    scripts: Sequence[str],
) -> tuple[list[str], list[str]]:
    """Create (cloud-config on stdin, prints the endpoint JSON) and delete argv of one agent's VM."""
    instance = context.machine_name(agent.name)
    create = [
        PYTHON, PROGRAM_PATH, "create", agent.name, instance, limactl, host_public_key,
        str(START_TIMEOUT_S), str(READY_TIMEOUT_S), config, steps_document(modules), *scripts,
    ]
    delete = [PYTHON, "-c", PROGRAM.read_text(), "delete", agent.name, instance, limactl]
    return create, delete


def _steps_of(user_data: str) -> tuple[list[str], list[str]]:
    return apply_steps(yaml.safe_load(user_data))


def provision(
    agent: AgentSpec,
    context: MachineContext,
    user_data: pulumi.Output[str],
    host_public_key: pulumi.Output[str],
    opts: pulumi.ResourceOptions,
) -> pulumi.Output[Endpoint]:
    """The VM (its disk holds the workspace); returns the address its sshd answers on."""
    where = f'stack "{context.stack}", agent "{agent.name}"'
    # Where limactl is missing, preview still shows the plan; the preflight refuses `up`.
    limactl = limactl_command() or "limactl"
    problem = socket_path_problem(lima_home(limactl), context.machine_name(agent.name))
    if problem:
        raise pulumi.RunError(f"{where}: {problem}")
    if agent.retain_workspace:
        pulumi.log.warn(f"{where}: retain_workspace is not supported by the lima backend; "
                        "the VM's disk (its workspace) is deleted with the VM")
    image = None if agent.image else local_image()
    if image is None and not agent.image:
        raise pulumi.RunError(f"{where}: the Lima VM image {image_id()} is not built; run scripts/setup "
                              "(or give the agent an `image`)")
    config = render_instance_config(instance_config(agent, image))
    # Module names and script paths only: nothing secret, so the create command stays readable.
    steps = pulumi.Output.unsecret(user_data.apply(_steps_of))
    commands = pulumi.Output.all(host_public_key, steps).apply(
        lambda values: machine_commands(context, agent, values[0], limactl, config, *values[1])
    )
    return machine(f"{agent.name}-vm", commands, user_data, opts)


def missing_tools() -> list[str]:
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
    if shutil.which(PYTHON) is None:
        missing.append("python3 (runs the Lima create/delete program)")
    if shutil.which("ssh-keyscan") is None:
        missing.append("ssh-keyscan (install openssh-client)")
    return missing


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
