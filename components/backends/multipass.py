"""How one agent becomes a Multipass VM: launch with the cloud-config on stdin, read its address,
wait for the pinned host key; `multipass delete --purge` on destroy.

Why these choices (see DESIGN.md): the cloud-config reaches Multipass on stdin
(`--cloud-init -`), never in argv, environment or a file. The VM's disk holds the workspace, so
the create command names the program by its path (LocalCommand runs in the project directory)
instead of carrying its text: editing the program does not replace every VM, only a changed
spec (launch flags, cloud-config) does. The delete command carries the program's text, so
`pulumi destroy` works from the state alone. The commands and the parsing of Multipass' outputs
live in multipass_cli.py (standard library only), which is also the program both commands run.

Tested against Multipass' documented CLI contract, not booted: Multipass ships as a snap and
cannot be installed on the machines this is built on.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pulumi

from components.backends import Endpoint, MachineContext, machine
from components.backends.multipass_cli import (  # noqa: F401  (the contract, re-exported)
    GUEST_SSH_PORT,
    LAUNCH_TIMEOUT_S,
    READY_TIMEOUT_S,
    MultipassError,
    daemon_answers,
    explain_error,
    instance_name_problem,
    launch_argv,
    parse_info,
)
from components.spec import AgentSpec

PROGRAM = Path(__file__).resolve().parent / "multipass_cli.py"
PROGRAM_PATH = "components/backends/multipass_cli.py"  # relative to the project directory
PYTHON = "python3"
VERSION_TIMEOUT_S = 30


def machine_commands(
    context: MachineContext,
    agent: AgentSpec,
    host_public_key: str,
    ssh_port: int = GUEST_SSH_PORT,
    ready_timeout_s: int = READY_TIMEOUT_S,
) -> tuple[list[str], list[str]]:
    """Create (cloud-config on stdin, prints the endpoint JSON) and delete argv of one agent's VM."""
    instance = context.machine_name(agent.name)
    launch = launch_argv(
        instance,
        cpus=agent.resources.cpus,
        memory_mib=agent.resources.memory_mib,
        disk_gib=agent.resources.disk_gib,
        image=agent.image,
    )
    create = [
        PYTHON, PROGRAM_PATH, "create",
        agent.name, instance, host_public_key, str(ssh_port), str(ready_timeout_s), "--", *launch,
    ]
    delete = [PYTHON, "-c", PROGRAM.read_text(), "delete", agent.name, instance]
    return create, delete


def provision(
    agent: AgentSpec,
    context: MachineContext,
    user_data: pulumi.Output[str],
    host_public_key: pulumi.Output[str],
    opts: pulumi.ResourceOptions,
) -> pulumi.Output[Endpoint]:
    """The VM (its disk holds the workspace); returns the address its sshd answers on."""
    problem = instance_name_problem(context.machine_name(agent.name))
    if problem:
        raise pulumi.RunError(f'stack "{context.stack}", agent "{agent.name}": {problem}')
    return machine(
        f"{agent.name}-vm",
        host_public_key.apply(lambda key: machine_commands(context, agent, key)),
        user_data,
        opts,
    )


def missing_tools() -> list[str]:
    missing = []
    if shutil.which("multipass") is None:
        missing.append("multipass (install it: `sudo snap install multipass`)")
    else:
        try:
            version = subprocess.run(
                ["multipass", "version"], capture_output=True, text=True,
                timeout=VERSION_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL,
            ).stdout
        except subprocess.TimeoutExpired:
            version = ""
        if not daemon_answers(version):
            missing.append(
                "a running Multipass daemon (`multipass version` lists no multipassd: "
                "start it with `sudo snap start multipass`)"
            )
    if shutil.which(PYTHON) is None:
        missing.append("python3 (runs the Multipass create/delete program)")
    if shutil.which("ssh-keyscan") is None:
        missing.append("ssh-keyscan (install openssh-client)")
    return missing
