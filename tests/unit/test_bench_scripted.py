"""bench/scripted.py: the script's `docker create` asks the engine for the container the driver makes."""

from bench.scripted import create_options, pinned_fields
from components.backends import MachineContext
from tests.unit.spec_helpers import agent, load


def options_of(**fields):
    spec = load({"agents": [agent(resources={"cpus": 0.5, "memory": "256m", "pids": 64}, **fields)]})
    fields = pinned_fields(MachineContext("bench", ("git-net",)), spec.agents[0])
    return fields, create_options(fields)


def pairs(options):
    return list(zip(options[:-1:2], options[1:-1:2]))


def test_every_limit_privilege_mount_and_port_of_the_container_is_asked_for():
    fields, options = options_of(ssh_port=22011)
    asked = pairs(options)
    assert options[-1] == fields["image"]
    assert ("--name", "agentfleet-bench-agent-1") in asked and ("--network", "agentfleet-bench") in asked
    assert ("--publish", "127.0.0.1:22011:22/tcp") in asked
    assert ("--mount", f"type=volume,src=agentfleet-bench-agent-1-workspace,dst={fields['workspace_mount']}") in asked
    assert ("--cap-drop", "ALL") in asked
    assert sorted(value for flag, value in asked if flag == "--cap-add") == sorted([*fields["capabilities"], "NET_ADMIN"])
    assert ("--security-opt", "no-new-privileges") in asked and ("--restart", "unless-stopped") in asked
    assert {("--memory", "256m"), ("--memory-swap", "256m"), ("--cpu-period", "100000"),
            ("--cpu-quota", "50000"), ("--pids-limit", "64")} <= set(asked)
    assert {("--label", "agentfleet.stack=bench"), ("--label", "agentfleet.agent=agent-1")} <= set(asked)


def test_net_admin_for_root_whatever_the_egress_as_the_policy_is_applied_inside():
    # The script applies the policy in the agent's container (the product in a policy container),
    # so its root keeps NET_ADMIN either way, and egress changes in place.
    _, restricted = options_of()
    _, open_ = options_of(egress="open")
    assert ("--cap-add", "NET_ADMIN") in pairs(restricted) and ("--cap-add", "NET_ADMIN") in pairs(open_)
