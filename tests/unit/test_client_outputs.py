"""Tier 1/2: where outputs come from and how they are validated (no SSH).

Keys are generated with the real ssh-keygen; the Pulumi CLI is replaced by a stub script on
PATH that records its argv and cwd, which is all the client relies on.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentfleet import Fleet, OutputsInvalid, PulumiError, StackNotFound, UnknownAgent, UsageError
from agentfleet.source import read_stack_outputs, resolve_source, stack_output_argv
from tests.key_marks import PRIVATE_KEY, PRIVATE_KEY_BEGIN, PRIVATE_KEY_END

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def outputs(make_key) -> dict:
    """Outputs exactly in the contract's shape for agent-1 (with a remote) and agent-2 (none)."""
    host_key = make_key("host").public.split()
    agents, keys = {}, {}
    for index, name in ((1, "agent-1"), (2, "agent-2")):
        port = 22000 + index
        agents[name] = {
            "backend": "docker",
            "host": "127.0.0.1",
            "port": port,
            "user": "agent",
            "known_hosts": f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}",
            "identity": {"name": f"Agent {index}", "email": f"{name}@example.com"},
            "remote": "ssh://git@127.0.0.1:2222/srv/git/app.git" if index == 1 else None,
            "branch": f"agent/{name}",
            "workspace": "/home/agent/workspace",
            "remote_public_key": f"ssh-ed25519 AAAA {name}@agentfleet" if index == 1 else None,
            "ssh_config": f"Host {name}\n  HostName 127.0.0.1\n  Port {port}\n",
        }
        keys[name] = make_key(name).private
    return {"agents": agents, "agent_private_keys": keys}


def problems_of(raw: object) -> str:
    with pytest.raises(OutputsInvalid) as caught:
        Fleet.from_outputs(raw, "dev")
    return str(caught.value)


def test_valid_outputs_become_endpoints(outputs):
    fleet = Fleet.from_outputs(outputs, "dev")
    assert fleet.names == ("agent-1", "agent-2")
    one = fleet.endpoint("agent-1")
    assert (one.host, one.port, one.user, one.address) == ("127.0.0.1", 22001, "agent", "127.0.0.1:22001")
    assert str(one.identity) == "Agent 1 <agent-1@example.com>"
    assert one.remote == "ssh://git@127.0.0.1:2222/srv/git/app.git"
    assert fleet.endpoint("agent-2").remote is None
    assert one.pkey().get_name() == "ssh-ed25519"
    assert PRIVATE_KEY not in repr(fleet) and PRIVATE_KEY not in repr(one)


def test_endpoints_are_frozen(outputs):
    fleet = Fleet.from_outputs(outputs, "dev")
    with pytest.raises(AttributeError):
        fleet.endpoint("agent-1").port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        fleet.agents["agent-3"] = fleet.endpoint("agent-1")  # type: ignore[index]


def test_agents_sorted_by_number_not_text(outputs):
    raw = copy.deepcopy(outputs)
    for name in ("agent-10", "agent-3"):
        raw["agents"][name] = raw["agents"]["agent-2"]
        raw["agent_private_keys"][name] = raw["agent_private_keys"]["agent-2"]
    assert Fleet.from_outputs(raw, "dev").names == ("agent-1", "agent-2", "agent-3", "agent-10")


def test_unknown_agent_lists_the_known_ones(outputs):
    with pytest.raises(UnknownAgent, match=r"no agent named 'agent-9'; known agents: agent-1, agent-2"):
        Fleet.from_outputs(outputs, "dev").agent("agent-9")


def test_every_missing_field_is_named_in_one_error(outputs):
    raw = copy.deepcopy(outputs)
    del raw["agents"]["agent-2"]["port"]
    del raw["agents"]["agent-2"]["identity"]["email"]
    del raw["agents"]["agent-1"]["known_hosts"]
    message = problems_of(raw)
    assert message.startswith("outputs of dev are invalid: ")
    for named in (
        "agents.agent-1.known_hosts is missing",
        "agents.agent-2.port is missing",
        "agents.agent-2.identity.email is missing",
    ):
        assert named in message
    assert "pulumi up" in message


@pytest.mark.parametrize(
    "field, value, complaint",
    [
        ("port", "22001", "agents.agent-1.port must be a port number"),
        ("port", 70000, "agents.agent-1.port must be a port number"),
        ("port", True, "agents.agent-1.port must be a port number"),
        ("backend", "vmware", "agents.agent-1.backend must be one of"),
        ("user", "", "agents.agent-1.user must be a non-empty string"),
        ("identity", "Agent 1", "agents.agent-1.identity is not an object"),
        (
            "known_hosts",
            "[127.0.0.1]:22001 ssh-ed25519 !!!",
            "agents.agent-1.known_hosts is not a known_hosts line",
        ),
        ("known_hosts", "just-one-field", "agents.agent-1.known_hosts is not a known_hosts line"),
        ("user_namespace", "yes", "agents.agent-1.user_namespace must be one of ('remapped', 'none', 'vm')"),
        ("user_namespace", "", "agents.agent-1.user_namespace must be a non-empty string"),
    ],
)
def test_ill_typed_fields_are_named(outputs, field, value, complaint):
    raw = copy.deepcopy(outputs)
    raw["agents"]["agent-1"][field] = value
    assert complaint in problems_of(raw)


def test_known_hosts_must_pin_this_endpoint(outputs):
    raw = copy.deepcopy(outputs)
    raw["agents"]["agent-1"]["port"] = 22009
    assert "agents.agent-1.known_hosts does not pin a key for [127.0.0.1]:22009" in problems_of(raw)


def test_nullable_fields_may_be_null(outputs):
    raw = copy.deepcopy(outputs)
    raw["agents"]["agent-1"].update(remote=None, workspace=None, remote_public_key=None, user_namespace=None)
    endpoint = Fleet.from_outputs(raw, "dev").endpoint("agent-1")
    assert (endpoint.remote, endpoint.workspace, endpoint.remote_public_key) == (None, None, None)
    assert endpoint.user_namespace is None


@pytest.mark.parametrize("value", ["remapped", "none", "vm"])
def test_the_user_namespace_is_read_from_the_outputs(outputs, value):
    raw = copy.deepcopy(outputs)
    raw["agents"]["agent-1"]["user_namespace"] = value
    assert Fleet.from_outputs(raw, "dev").endpoint("agent-1").user_namespace == value


@pytest.mark.parametrize(
    "keys, complaint",
    [
        ({"agent-2": "x"}, "agent_private_keys.agent-1 is missing"),
        (
            {"agent-1": "[secret]"},
            "agent_private_keys.agent-1 is hidden ([secret]); read the outputs with --show-secrets",
        ),
        (
            {"agent-1": f"{PRIVATE_KEY_BEGIN}\nAAAA\n{PRIVATE_KEY_END}\n"},
            "agent_private_keys.agent-1 is not an unencrypted OpenSSH or PEM private key (ed25519, ECDSA or RSA)",
        ),
        ({"agent-1": 42}, "agent_private_keys.agent-1 must be a string"),
    ],
)
def test_private_key_problems_are_named(outputs, keys, complaint):
    raw = copy.deepcopy(outputs)
    raw["agent_private_keys"] = {**raw["agent_private_keys"], **keys}
    if "agent-1" not in keys:
        del raw["agent_private_keys"]["agent-1"]
    assert complaint in problems_of(raw)


def test_outputs_without_agents_say_deploy_first():
    assert "there is no 'agents' object (has the stack been deployed?)" in problems_of({})


def test_recorded_outputs_without_show_secrets_are_refused_with_the_flag_to_use():
    raw = json.loads((FIXTURES / "outputs" / "try-without-secrets.json").read_text())
    assert "'agent_private_keys' is hidden ([secret]); read the outputs with --show-secrets" in problems_of(
        raw
    )


def test_recorded_outputs_of_the_pulumi_side_parse(make_key):
    """The real `pulumi stack output --json` of a Docker stack, private keys added."""
    raw = json.loads((FIXTURES / "outputs" / "try-without-secrets.json").read_text())
    raw["agent_private_keys"] = {name: make_key(name).private for name in raw["agents"]}
    fleet = Fleet.from_outputs(raw, "try")
    assert fleet.names == ("agent-1", "agent-2")
    assert {agent.user for agent in fleet.agents.values()} == {"agent"}
    assert all(agent.host_keys().lookup(agent.host_key_name) for agent in fleet.agents.values())


def test_keys_serialized_by_cryptography_are_accepted(outputs):
    """components/keys.py writes operator keys with cryptography's OpenSSH serializer."""
    pem = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        .decode()
    )
    raw = copy.deepcopy(outputs)
    raw["agent_private_keys"]["agent-1"] = pem
    assert Fleet.from_outputs(raw, "dev").endpoint("agent-1").pkey().get_name() == "ssh-ed25519"


# --- where the outputs come from -------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "Pulumi.yaml").write_text("name: agentfleet\nruntime: python\n")
    (tmp_path / "components" / "backends").mkdir(parents=True)
    return tmp_path


def test_default_is_stack_dev_of_the_project_found_upwards(project):
    source = resolve_source(project_dir=project / "components" / "backends", environ={})
    assert (source.stack, source.project_dir, source.name) == ("dev", project, "dev")


def test_environment_picks_stack_or_file(project, tmp_path):
    assert resolve_source(project_dir=project, environ={"AGENTFLEET_STACK": "prod"}).stack == "prod"
    source = resolve_source(project_dir=project, environ={"AGENTFLEET_OUTPUTS": str(tmp_path / "f.json")})
    assert (source.stack, source.outputs_file, source.name) == (None, tmp_path / "f.json", "f")


def test_arguments_win_over_environment(project):
    environ = {"AGENTFLEET_OUTPUTS": "/elsewhere.json"}
    assert resolve_source("staging", project_dir=project, environ=environ).stack == "staging"


def test_two_answers_at_one_level_are_refused(project):
    with pytest.raises(UsageError, match="either --stack or --outputs"):
        resolve_source("dev", "outputs.json", project, environ={})
    with pytest.raises(UsageError, match="both AGENTFLEET_STACK and AGENTFLEET_OUTPUTS are set"):
        resolve_source(project_dir=project, environ={"AGENTFLEET_STACK": "a", "AGENTFLEET_OUTPUTS": "b"})


def test_stack_outside_a_project_says_how_to_fix(tmp_path):
    with pytest.raises(
        StackNotFound, match=r"no Pulumi project \(Pulumi.yaml\) in .* pass --cwd DIR, or --outputs FILE"
    ):
        resolve_source(project_dir=tmp_path, environ={})


def test_outputs_file_problems(tmp_path):
    with pytest.raises(UsageError, match=r"cannot read outputs file .*missing\.json: No such file"):
        resolve_source(outputs=tmp_path / "missing.json", environ={}).read()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(OutputsInvalid, match="not JSON"):
        resolve_source(outputs=bad, environ={}).read()


def test_outputs_file_round_trip(tmp_path, outputs):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(outputs))
    assert Fleet.open(outputs=path).names == ("agent-1", "agent-2")


@pytest.fixture
def pulumi_stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Put a `pulumi` on PATH that records its cwd and argv (a line each), then prints as told."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "pulumi-call"

    def install(stdout: str = "", stderr: str = "", status: int = 0) -> Path:
        (tmp_path / "stdout").write_text(stdout)
        (tmp_path / "stderr").write_text(stderr)
        script = bin_dir / "pulumi"
        script.write_text(
            "#!/bin/sh\n"
            f"printf '%s\\n' \"$PWD\" \"$@\" > '{record}'\n"
            f"cat '{tmp_path / 'stdout'}'\ncat '{tmp_path / 'stderr'}' >&2\nexit {status}\n"
        )
        script.chmod(0o755)
        return record

    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return install


def test_stack_outputs_come_from_pulumi_with_secrets_in_the_project_dir(project, pulumi_stub, outputs):
    record = pulumi_stub(stdout=json.dumps(outputs))
    fleet = Fleet.open(stack="prod", project_dir=project / "components")
    assert fleet.name == "prod" and fleet.names == ("agent-1", "agent-2")
    cwd, *argv = record.read_text().splitlines()
    assert argv == stack_output_argv("prod")[1:]
    assert argv == ["stack", "output", "--json", "--show-secrets", "--stack", "prod"]
    assert Path(cwd) == project


def test_missing_stack_is_stack_not_found(project, pulumi_stub):
    pulumi_stub(stderr="error: no stack named 'nope' found\n", status=255)
    with pytest.raises(StackNotFound, match=r"no stack 'nope' .*`pulumi stack ls`"):
        read_stack_outputs(project, "nope")


def test_other_pulumi_failures_show_its_last_line(project, pulumi_stub):
    pulumi_stub(
        stderr="warning: x\nerror: passphrase must be set with PULUMI_CONFIG_PASSPHRASE\n", status=255
    )
    with pytest.raises(PulumiError, match="failed: error: passphrase must be set"):
        read_stack_outputs(project, "dev")


def test_pulumi_missing_from_path(project, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        PulumiError, match="pulumi CLI is not on PATH; run scripts/setup, or pass --outputs FILE"
    ):
        read_stack_outputs(project, "dev")
