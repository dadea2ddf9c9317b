"""GitHub App tokens during `up` and `exec`, end to end: a real `pulumi up` of a Docker agent whose
fleet names a GitHub App (its API: the GitHub stand-in of tests/unit/github_api.py on loopback,
which verifies the App's JWT as GitHub documents it and mints tokens of the lifetime the test
sets), then `agentfleet exec` refreshing the agent's token, another `up`, and `agentfleet pr`
opening the agent's pull request with a token minted for that.

While each runs, every process's arguments and environment are sampled (tests/e2e/process_sampler.py).
Neither the App's private key nor any token minted (by `up` or by `exec`) may appear in them (but
the language host's own configuration channel, as in test_secrets_during_up.py), in the state as
`pulumi stack export` shows it, in Pulumi's output and engine events, or in exec's expiry record;
the decrypted state does hold them (so the search would find them). The agent holds the token last
written, whoever wrote it, and exec mints only when that token is due: after `up` wrote a token
of its own, exec goes by the expiry `up` exported, not by its own record.
"""

from __future__ import annotations

import io
import json
import re
import time
from typing import Any

import pytest

from agentfleet import Fleet
from agentfleet.cli import main as cli
from agentfleet.contract import GIT_CREDENTIALS_PATH
from tests.e2e.process_sampler import ProcessSampler, config_channel
from tests.e2e.support import FleetStack
from tests.unit.github_api import GitHubApi, app_key_pair

AGENT = "app-agent"
REMOTE_HOST = "127.0.0.1"  # nothing answers there: the first clone fails, the token is what matters here
PRIVATE, PUBLIC = app_key_pair()
# The key's body lines: long enough that finding one anywhere means the key is there.
KEY_LINES = [line for line in PRIVATE.splitlines() if len(line) > 40]


@pytest.fixture(scope="module")
def github():
    api = GitHubApi(app_public_key=PUBLIC).start()
    yield api
    api.stop()


@pytest.fixture
def stack(github: GitHubApi, make_stack):
    made: FleetStack = make_stack("apptokens")
    yield made
    made.destroy()  # while the stand-in is up (destroy revokes up's token there); again is a no-op


def fleet_config(github: GitHubApi) -> dict[str, Any]:
    return {
        "defaults": {"resources": {"cpus": 0.5, "memory": "192m", "pids": 128}},
        # No forge.token: an App's fleet needs none (its pull requests are opened with App tokens too).
        "forge": {"kind": "github", "api": github.url, "repository": github.repository,
                  "app": {"id": github.app_id, "installation": github.installation, "private_key": "githubAppKey"}},
        "agents": [{"name": AGENT, "identity": {"name": "App Agent", "email": "app@fleet.test"}, "egress": "open",
                    "remote": f"https://{REMOTE_HOST}/{github.repository}.git"}],
    }


class Logged:
    """Pulumi's output and engine events of the `up`s, as text."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def up(self, stack: FleetStack) -> dict[str, Any]:
        result = stack.stack.up(on_output=self.parts.append, on_event=lambda event: self.parts.append(repr(event)))
        return {key: value.value for key, value in result.outputs.items()}

    def text(self) -> str:
        return "\n".join(self.parts)


def credential(outputs: dict[str, Any]) -> str:
    """The agent's ~/.git-credentials, read over its own connection (no refresh on the way), once
    cloud-init has written it."""
    with Fleet.from_outputs(outputs, "check") as client:
        for _ in range(60):
            result = client.agent(AGENT).run(f"cat {GIT_CREDENTIALS_PATH}", timeout=60)
            if result.ok:
                return result.stdout
            time.sleep(1)
    raise AssertionError(f"no {GIT_CREDENTIALS_PATH} in the agent: {result.stderr}")


def line_of(token: str) -> str:
    return f"https://x-access-token:{token}@{REMOTE_HOST}\n"


def test_no_app_key_or_token_leaves_the_secrets_during_up_and_exec(github: GitHubApi, stack: FleetStack, monkeypatch):
    stack.set_secret("githubAppKey", PRIVATE)
    stack.set_fleet(fleet_config(github))
    logged = Logged()
    samplers = []

    # 1. `up` mints the agent's token before its machine is made; this one has 5 minutes to live, so
    #    the next exec finds it due (fewer than 10 minutes left).
    github.token_lifetime = 300
    with ProcessSampler() as sampler:
        outputs = logged.up(stack)
    samplers.append(sampler)
    assert len(github.minted) == 1
    by_up = github.minted[0]
    assert credential(outputs) == line_of(by_up)  # cloned at boot with it (here: would have)
    upped = outputs["forge"]["app"]["expires"][AGENT]
    assert outputs["forge"]["app"]["agents"] == [AGENT] and abs(upped - (time.time() + 300)) < 120

    # 2. `agentfleet exec` mints a fresh one before the command (over stdin), and keeps only its expiry.
    github.token_lifetime = 3600
    for key, value in {**stack.env, "AGENTFLEET_PERSIST": "0"}.items():
        monkeypatch.setenv(key, value)  # `pulumi stack output` runs with the process environment

    def exec_(*argv: str) -> None:
        out, err = io.StringIO(), io.StringIO()
        status = cli(["--stack", stack.name, "--cwd", str(stack.project_dir), "exec", AGENT, "--", *argv], out, err)
        assert status == 0, err.getvalue()

    with ProcessSampler() as sampler:
        exec_("true")
    samplers.append(sampler)
    assert len(github.minted) == 2
    by_exec = github.minted[1]
    assert credential(outputs) == line_of(by_exec)
    record_path = stack.project_dir / ".agentfleet" / stack.name / "app-tokens.json"
    record = json.loads(record_path.read_text())
    assert record[AGENT]["over"] == upped and record[AGENT]["expires_at"] > time.time() + 3000
    exec_("true")  # the record says an hour: nothing minted
    assert len(github.minted) == 2

    # 3. The next `up` (refresh: always) finds up's token due, mints another and writes it into the
    #    running agent; exec then goes by the expiry `up` exported (fresh): nothing minted.
    with ProcessSampler() as sampler:
        outputs = logged.up(stack)
    samplers.append(sampler)
    assert len(github.minted) == 3
    by_up_again = github.minted[2]
    assert credential(outputs) == line_of(by_up_again)
    assert outputs["forge"]["app"]["expires"][AGENT] > upped + 3000
    exec_("true")
    assert len(github.minted) == 3 and credential(outputs) == line_of(by_up_again)

    # 4. `agentfleet pr` opens the agent's pull request with a token of its own (no forge.token here).
    github.branches.add(f"agent/{AGENT}")
    out, err = io.StringIO(), io.StringIO()
    with ProcessSampler() as sampler:
        status = cli(["--stack", stack.name, "--cwd", str(stack.project_dir), "pr", AGENT, "--json"], out, err)
    samplers.append(sampler)
    assert (status, err.getvalue()) == (0, "") and json.loads(out.getvalue())[0]["action"] == "opened"
    by_pr = github.minted[3]
    assert github.tokens.get(by_pr) is None and github.pulls[0]["head"]["ref"] == f"agent/{AGENT}"  # revoked

    # Nowhere but in the secrets.
    tokens = [by_up, by_exec, by_up_again, by_pr]
    secrets = [*tokens, *KEY_LINES]
    channel = config_channel()[1]
    for sampler in samplers:
        assert sampler.saw_its_marker(), "the sampler missed the short process it planted"
        for secret in secrets:
            holders = sampler.holders(secret.encode(), except_variables=channel)
            assert not holders, f"an App key line or token was in some process's argv or environment: {holders}"
    exported = stack.export()  # as a user runs it: secrets encrypted
    decrypted = json.dumps(stack.stack.export_stack().deployment)
    plain_config = stack.config_file.read_text()
    for secret in secrets:
        assert secret not in exported, "an App key line or token is readable in `pulumi stack export`"
        assert secret not in logged.text(), "an App key line or token is in Pulumi's output or engine events"
        assert secret not in record_path.read_text() and secret not in plain_config
    assert by_up_again in decrypted and all(line in decrypted.replace("\\n", "\n") for line in KEY_LINES)
    assert re.search(r"ghs_\w+", exported) is None

    # `pulumi destroy` revokes the token `up` minted.
    assert by_up_again in github.tokens
    stack.destroy()
    assert by_up_again not in github.tokens
