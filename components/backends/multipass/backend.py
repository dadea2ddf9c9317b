"""How one agent becomes a Multipass VM: launched with the cloud-config on stdin, read back on
refresh (its address, its state), started again when stopped, purged on destroy.

Why these choices (see DESIGN.md): the cloud-config reaches Multipass on stdin
(`--cloud-init -`), never in argv, environment or a file. The VM is a `Reconciled` resource
driven by driver.VmDriver; its inputs are the launch flags and the cloud-config, so
editing agentfleet's code replaces no VM. The commands and the parsing of Multipass' outputs live
in driver.py.

Tested against Multipass' documented CLI contract, not booted: Multipass ships as a snap and
cannot be installed on the machines this is built on.
"""

from __future__ import annotations

import shutil

import pulumi

from components.backends import Endpoint, MachineContext
from components.backends.multipass.driver import daemon_answers, instance_name_problem, launch_argv
from components.process import run
from components.reapply import in_place_fields
from components.reconciled import Reconciled
from components.spec import AgentSpec, FleetSpec

VERSION_TIMEOUT_S = 30


class MultipassVm(Reconciled):
    KIND = "MultipassVm"
    host: pulumi.Output[str]
    port: pulumi.Output[int]


def vm_fields(context: MachineContext, agent: AgentSpec) -> dict:
    instance = context.machine_name(agent.name)
    return {
        "name": instance,
        "agent": agent.name,
        "launch": launch_argv(instance, cpus=agent.resources.cpus, memory_mib=agent.resources.memory_mib,
                              disk_gib=agent.resources.disk_gib, image=agent.image),
        "state": "running",
        **in_place_fields(agent),
        **context.forge_gate(agent),
    }


class MultipassBackend:
    policy_in_machine = True

    def runs_agent_image(self, agent: AgentSpec, context: MachineContext) -> bool:
        return False  # stock cloud images: the shared files travel in the cloud-config

    def missing_tools(self) -> list[str]:
        if shutil.which("multipass") is None:
            return ["multipass (install it: `sudo snap install multipass`)"]
        if not daemon_answers(run(["multipass", "version"], timeout_s=VERSION_TIMEOUT_S).stdout):
            return ["a running Multipass daemon (`multipass version` lists no multipassd: "
                    "start it with `sudo snap start multipass`)"]
        return []

    def preflight(self, fleet: FleetSpec, agents: list[AgentSpec]) -> list[str]:
        return []  # a VM has its own address: no host port to collide

    def fleet_resources(self, fleet: FleetSpec, context: MachineContext,
                        opts: pulumi.ResourceOptions) -> dict[str, list[pulumi.Resource]]:
        return {}

    def provision(self, agent: AgentSpec, context: MachineContext, user_data: pulumi.Output[str],
                  host_public_key: pulumi.Output[str], opts: pulumi.ResourceOptions) -> pulumi.Output[Endpoint]:
        """The VM (its disk holds the workspace); returns the address its sshd answers on."""
        problem = instance_name_problem(context.machine_name(agent.name))
        if problem:
            raise pulumi.RunError(f'stack "{context.stack}", agent "{agent.name}": {problem}')
        vm = MultipassVm(f"{agent.name}-vm", {**vm_fields(context, agent), "host_public_key": host_public_key},
                         secret=user_data, opts=opts)
        return pulumi.Output.all(vm.host, vm.port).apply(lambda v: Endpoint(host=v[0], port=int(v[1]), user_namespace="vm"))


BACKEND = MultipassBackend()
