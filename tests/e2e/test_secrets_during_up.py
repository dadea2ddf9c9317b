"""Secrets during `up`, not only after it: while a real `pulumi up` makes a fleet that uses every
credential kind (a generated key, a given key, an https token) and pinned host keys, every host
process's arguments and environment are sampled, and every call to the Docker engine is recorded
through a proxy on its socket. No key or token may appear in any of them; the cloud-config may
reach the engine only as the body of the archive upload that seeds its container.

It holds with either Python language host: agentfleet's hands the program its configuration on
stdin, so no exception is allowed; the upstream one hands it over in the program's PULUMI_CONFIG
environment variable (as docs/security.md, Secrets, says), the one exception allowed there. Which
host ran is read from PATH; the test of each host's channel runs for that host and is skipped,
saying why, for the other. (A machine without Pulumi's downloads has only agentfleet's host.)
"""

from __future__ import annotations

import json
import re

import pytest

from agentfleet.contract import CLONE_GATE
from components.backends.docker.policy import CODE_FILES
from components.keys import generate_ed25519
from tests.e2e.docker_api_recorder import Recorder
from tests.e2e.process_sampler import ProcessSampler, config_channel
from tests.e2e.support import FleetStack, GitServer
from tests.key_marks import PRIVATE_KEY, PRIVATE_KEY_BEGIN, PRIVATE_KEY_END

TOKEN = "ghp_e2eTokenNeverInArgvOrEnv0123456789"
# The first body line of an OpenSSH ed25519 key is the same for every such key: not key material.
SHARED_FIRST_LINE = generate_ed25519("any")[0].splitlines()[1]
SEED_UPLOAD = re.compile(r"/containers/[^/]+/archive\?path=%2F$")
# The other upload to / before a container starts: the first clone's gate (a file, no key in it).
GATE_MEMBER = f"{CLONE_GATE.lstrip('/')}/required".encode()
# And the egress policy's, to the agent's policy container (no key in it either).
POLICY_MEMBER = next(iter(CODE_FILES)).encode()


def secret_lines(state: str) -> set[str]:
    """Every line of every private key in the decrypted state, but the ones all keys share."""
    lines = set()
    armoured = f"{re.escape(PRIVATE_KEY_BEGIN)}(.*?){re.escape(PRIVATE_KEY_END)}"
    for block in re.findall(armoured, state.replace("\\n", "\n"), re.S):
        lines.update(line for line in block.split() if len(line) > 20)
    return lines - {SHARED_FIRST_LINE}


@pytest.fixture(scope="module")
def observed(make_stack, git_server: GitServer, tmp_path_factory, agent_image):
    stack: FleetStack = make_stack("secrets")
    given_private, given_public = generate_ed25519("given-key")
    git_server.authorize(given_public)
    stack.set_secret("givenKey", given_private)
    stack.set_secret("token", TOKEN)
    ssh_remote = {"remote": git_server.url, "known_hosts": [git_server.known_hosts_line]}
    stack.set_fleet({"attach_networks": [git_server.network],
                     "defaults": {"resources": {"cpus": 0.5, "memory": "192m", "pids": 128}}, "agents": [
        {"name": "generated", "identity": {"name": "G", "email": "g@fleet.test"}, **ssh_remote},
        {"name": "given", "identity": {"name": "K", "email": "k@fleet.test"}, "credential": {"ssh_key": "givenKey"},
         **ssh_remote},
        {"name": "token", "identity": {"name": "T", "email": "t@fleet.test"}, "egress": "open",
         "remote": "https://127.0.0.1/nowhere.git", "credential": {"https_token": "token"}},
    ]})
    socket_path = tmp_path_factory.mktemp("docker") / "recorded.sock"
    stack.env["DOCKER_HOST"] = f"unix://{socket_path}"
    stack.stack.workspace.env_vars["DOCKER_HOST"] = f"unix://{socket_path}"
    try:
        with Recorder(socket_path) as recorder, ProcessSampler() as sampler:
            stack.up()
    finally:  # later runs (and the teardown's destroy) talk to the daemon directly again
        stack.env.pop("DOCKER_HOST", None)
        stack.stack.workspace.env_vars.pop("DOCKER_HOST", None)
    state = stack.stack.export_stack().deployment  # decrypted, as --show-secrets shows it
    secrets = secret_lines(json.dumps(state)) | {TOKEN}
    assert len(secrets) > 20, "the decrypted state should hold every key"
    yield recorder, sampler, secrets, given_private


def test_the_sampler_and_recorder_saw_the_up(observed):
    recorder, sampler, _, _ = observed
    assert sampler.rounds > 100
    assert sampler.saw_its_marker(), "the sampler missed the short process it planted during up"
    paths = [path for _, path, _ in recorder.calls()]
    assert sum(1 for path in paths if "/containers/create" in path) == 6  # each agent's and its policy container


def test_no_key_or_token_in_any_process_arguments_or_environment_during_up(observed):
    """With either language host: nowhere but the host's own channel for the configuration."""
    _, sampler, secrets, _ = observed
    _, channel = config_channel()
    for secret in secrets:
        holders = sampler.holders(secret.encode(), except_variables=channel)
        assert not holders, f"a secret was in some process's argv or environment: {holders}"
    assert not sampler.holders(PRIVATE_KEY.encode(), except_variables=channel)


@pytest.mark.parametrize("host", ["agentfleet", "upstream"])
def test_the_configuration_travels_where_the_language_host_puts_it(observed, host):
    """Which host this run covered (the other is skipped, saying so), and that the exception
    above is that host's channel and no wider: agentfleet's host puts the configured secrets in
    no environment at all (the test above allowed nothing); the upstream one puts them in the
    program's PULUMI_CONFIG and nowhere else."""
    running, _ = config_channel()
    if running != host:
        where = "unreachable" if host == "agentfleet" else "reachable"
        pytest.skip(f"the engine here runs the {running} language host; the {host} one runs where Pulumi's "
                    f"installer is {where}")
    _, sampler, _, given_private = observed
    in_config = sampler.holders(TOKEN.encode()) + sampler.holders(given_private.splitlines()[2].encode())
    if host == "agentfleet":
        assert in_config == []
    else:
        assert in_config and all(h.startswith("environ: b'PULUMI_CONFIG=") for h in in_config), in_config


def test_key_material_reaches_the_engine_only_in_the_seed_upload(observed):
    recorder, _, secrets, _ = observed
    uploads = 0
    for method, path, sent in recorder.calls():
        carries = [s for s in secrets if s.encode() in sent]
        if method == "PUT" and SEED_UPLOAD.search(path) and GATE_MEMBER not in sent and POLICY_MEMBER not in sent:
            uploads += 1
            continue
        assert not carries, f"{method} {path} carries key material"
        assert PRIVATE_KEY.encode() not in sent, f"{method} {path} carries a private key"
    assert uploads == 3, "each container gets its cloud-config in exactly one archive upload"
