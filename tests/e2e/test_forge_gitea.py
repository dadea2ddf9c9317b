"""The forge in the loop, end to end against a real Gitea (tests/e2e/gitea_server.py): `pulumi up`
of two Docker agents registers their generated keys as deploy keys, so both clone at first boot
with nobody registering anything; each pushes its branch; `agentfleet pr --all` opens a pull
request per agent (and shows the same ones again); a key deleted on Gitea comes back with the next
`pulumi up`; `pulumi destroy` leaves no deploy key of the stack behind. The token is a Pulumi
secret: no process's arguments or environment hold it during `up` (but the language host's own
configuration channel, as in test_secrets_during_up.py), nor are the state, the container's
inspect output or the process list after it."""

from __future__ import annotations

import io
import json
import subprocess

import pytest
from pulumi import automation as auto

from agentfleet import Fleet
from agentfleet.cli import main as cli
from agentfleet.forge import key_body
from tests.e2e.gitea_server import GiteaServer
from tests.e2e.process_sampler import ProcessSampler, config_channel
from tests.e2e.support import FleetStack, docker, docker_objects

AGENTS = ("agent-a", "agent-b")


def fleet_config(gitea: GiteaServer, names: tuple[str, ...] = AGENTS) -> dict:
    return {
        "attach_networks": [gitea.network],
        "defaults": {"resources": {"cpus": 0.5, "memory": "256m", "pids": 128}},
        "forge": {"kind": "gitea", "api": gitea.api, "repository": gitea.repository, "token": "forgeToken"},
        "agents": [{"name": name, "identity": {"name": name.title(), "email": f"{name}@fleet.test"},
                    "remote": gitea.url, "known_hosts": [gitea.known_hosts_line]} for name in names],
    }


def stack_keys(gitea: GiteaServer, stack: FleetStack) -> dict[str, dict]:
    """The deploy keys of this stack on the forge (the session's Gitea serves other tests too), by title."""
    return {key["title"]: key for key in gitea.deploy_keys() if key["title"].startswith(f"agentfleet {stack.name}/")}


def run_ok(client: Fleet, agent: str, command: str) -> str:
    result = client.agent(agent).run(command, timeout=120)
    assert result.ok, f"{agent}: `{command}` exited {result.exit_status}: {result.stderr}"
    return result.stdout.strip()


def test_deploy_keys_from_up_to_destroy_with_clones_pushes_and_pull_requests(gitea: GiteaServer, make_stack,
                                                                              monkeypatch):
    stack: FleetStack = make_stack("forge")
    stack.set_secret("forgeToken", gitea.token)
    stack.set_fleet(fleet_config(gitea))
    with ProcessSampler() as sampler:  # every process's argv and environment, all through the up
        outputs = stack.up()
    assert sampler.saw_its_marker()
    holders = sampler.holders(gitea.token.encode(), except_variables=config_channel()[1])
    assert not holders, f"the forge token was in some process's argv or environment during up: {holders}"

    titles = {f"agentfleet {stack.name}/{name}": name for name in AGENTS}
    keys = stack_keys(gitea, stack)
    assert set(keys) == set(titles)
    for title, name in titles.items():
        assert key_body(keys[title]["key"]) == key_body(outputs["agents"][name]["remote_public_key"])
        assert keys[title]["read_only"] is False

    with Fleet.from_outputs(outputs, stack.name) as client:
        for name in AGENTS:
            # Cloned at first boot (cloud-init), on the agent's branch: nobody registered a key by hand.
            assert run_ok(client, name, "git rev-parse --abbrev-ref HEAD") == f"agent/{name}"
            run_ok(client, name, f"echo {name} > {name}.txt && git add . && "
                                 f"git commit -q -m 'work of {name}' && git push -q origin HEAD")
    assert {f"agent/{name}" for name in AGENTS} <= gitea.branches()

    for key, value in {**stack.env, "AGENTFLEET_PERSIST": "0"}.items():
        monkeypatch.setenv(key, value)  # `pulumi stack output` runs with the process environment

    def pr(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = cli(["--stack", stack.name, "--cwd", str(stack.project_dir), "pr", *argv], out, err)
        return status, out.getvalue(), err.getvalue()

    status, out, err = pr("--all", "--json")
    assert (status, err) == (0, "")
    opened = json.loads(out)
    assert [(p["agent"], p["action"], p["branch"], p["base"]) for p in opened] == [
        (name, "opened", f"agent/{name}", "main") for name in AGENTS]
    pulls = {(p["head"]["ref"], p["base"]["ref"]): p for p in gitea.call("GET", f"/repos/{gitea.repository}/pulls?state=open")}
    for entry in opened:
        assert pulls[(entry["branch"], "main")]["number"] == entry["number"]
        assert pulls[(entry["branch"], "main")]["title"] == f"agentfleet {stack.name}/{entry['agent']}: {entry['branch']}"
    # Asked again, each agent's pull request is shown, not opened twice.
    status, out, err = pr(AGENTS[0])
    first = opened[0]
    assert (status, out, err) == (0, f"{AGENTS[0]}: open #{first['number']} {first['url']} (agent/{AGENTS[0]} -> main)\n", "")

    # A key deleted on the forge is drift: the next `pulumi up` (refresh: always) registers it again.
    gone = keys[f"agentfleet {stack.name}/{AGENTS[0]}"]
    gitea.call("DELETE", f"/repos/{gitea.repository}/keys/{gone['id']}")
    assert set(stack_keys(gitea, stack)) == set(titles) - {gone["title"]}
    stack.up()
    healed = stack_keys(gitea, stack)
    assert set(healed) == set(titles) and healed[gone["title"]]["id"] != gone["id"]
    assert key_body(healed[gone["title"]]["key"]) == key_body(gone["key"])
    with Fleet.from_outputs(stack.outputs(), stack.name) as client:
        run_ok(client, AGENTS[0], "git fetch -q origin && git push -q origin HEAD")  # the key works again

    # The token is a secret wherever it is kept.
    state = stack.export()
    inspected = docker("inspect", *docker_objects("container", f"agentfleet.stack={stack.name}"))
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    for text, where in ((state, "pulumi stack export"), (inspected, "docker inspect"), (processes, "ps")):
        assert gitea.token not in text, f"the forge token is readable in {where}"

    stack.destroy()
    assert stack_keys(gitea, stack) == {}


def test_a_token_gitea_refuses_stops_up_before_anything_is_made(gitea: GiteaServer, make_stack):
    stack: FleetStack = make_stack("forge-refused")
    stack.set_secret("forgeToken", "0" * 40)
    stack.set_fleet(fleet_config(gitea))
    with pytest.raises(auto.CommandError) as failed:
        stack.stack.up(on_output=lambda _: None)
    assert (f'stack "{stack.name}", field "forge": gitea refused to read the repository on {gitea.repository} '
            "(HTTP 401") in str(failed.value)
    assert "0" * 40 not in str(failed.value)
    resources = stack.stack.export_stack().deployment.get("resources") or []
    assert [r["type"] for r in resources if r["type"] != "pulumi:pulumi:Stack"] == []
    assert docker_objects("container", f"agentfleet.stack={stack.name}") == [] and stack_keys(gitea, stack) == {}
