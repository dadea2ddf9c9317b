"""Bad input and an unready machine are refused by the real engine before anything exists:
`pulumi up` fails with a message naming stack, agent and field (and so does preview for bad input;
for what the machine lacks, preview shows the plan with a warning)."""

from __future__ import annotations

import socket

import pytest
from pulumi import automation as auto

from tests.e2e.support import FleetStack, docker_objects

IDENTITY = {"name": "A", "email": "a@example.com"}


def refused(stack: FleetStack, fleet: dict, preview_fails: bool = True) -> str:
    """`up` fails (and preview, for an invalid config; for what this machine lacks, preview warns);
    returns up's message after checking nothing was created."""
    stack.set_fleet(fleet)
    lines: list[str] = []
    if preview_fails:
        with pytest.raises(auto.CommandError):
            stack.stack.preview(on_output=lines.append)
    else:
        stack.stack.preview(on_output=lines.append)
        assert any("`pulumi up` will refuse this" in line for line in lines), lines
    with pytest.raises(auto.CommandError) as failed:
        stack.stack.up(on_output=lambda _: None)
    resources = stack.stack.export_stack().deployment.get("resources") or []
    assert [r["type"] for r in resources if r["type"] != "pulumi:pulumi:Stack"] == []
    for kind in ("container", "volume", "network"):
        assert docker_objects(kind, f"agentfleet.stack={stack.name}") == []
    return str(failed.value)


@pytest.fixture
def stack(make_stack) -> FleetStack:
    return make_stack("refused")


def test_invalid_config_names_stack_agent_and_field(stack):
    message = refused(stack, {"agents": [
        {"name": "agent-1", "identity": {"name": "A", "email": "nope"}, "backend": "dokcer"},
        {"name": "agent-1", "identity": IDENTITY},
    ]})
    assert f'stack "{stack.name}", agent "agent-1", field "identity.email"' in message
    assert "unknown backend 'dokcer'; use one of docker, lima, multipass, kubernetes" in message
    assert 'field "name": duplicate agent name' in message


def test_empty_fleet_is_refused(stack):
    assert "the fleet is empty" in refused(stack, {"agents": []})


def test_a_host_port_already_taken_is_refused(stack):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        message = refused(stack, {"agents": [{"name": "agent-1", "identity": IDENTITY, "ssh_port": port}]},
                          preview_fails=False)
    assert f'agent "agent-1": port {port} is taken on host "local" by another process' in message


def test_allow_entries_that_name_no_destination_are_refused(stack):
    # Names are resolved by the agent (through its `dns`), not here: only the form is checked.
    message = refused(stack, {"agents": [{"name": "agent-1", "identity": IDENTITY,
                                          "allow": ["*.com:443", "10.0.0.5/24:22", "pypi.org:443/icmp"]}]})
    assert 'agent "agent-1", field "allow[0]": \'*.com:443\' is not host:port' in message
    assert 'field "allow[1]": \'10.0.0.5/24:22\' is not host:port: it has the address or range' in message
    assert 'field "allow[2]"' in message


def test_hostile_values_are_refused_before_anything_exists(stack):
    message = refused(stack, {"agents": [
        {"name": "agent-1", "identity": {"name": "A\n[core]\n\tsshCommand = touch /tmp/owned", "email": "a@example.com"}},
        {"name": "agent-2", "identity": IDENTITY, "remote": "ext::sh", "branch": "-f"},
    ]})
    assert f'stack "{stack.name}", agent "agent-1", field "identity.name"' in message
    assert "control character U+000A" in message
    assert 'agent "agent-2", field "remote": \'ext::sh\' makes git run the remote helper git-remote-ext' in message
    assert 'agent "agent-2", field "branch": \'-f\' starts with \'-\'' in message
