"""Per-agent forge users, end to end against a real Gitea (tests/e2e/gitea_server.py): two agents
name two machine users; `pulumi up` refuses while one of them may not push (nothing made, no key
on either user), then, once it may, registers each agent's generated key as its user's SSH key
(not a deploy key); both agents clone at boot and push, and Gitea's activity feed shows each push
as that agent's user while the commits keep the agent's own git identity; a user key deleted on
Gitea comes back with `pulumi up`; `pulumi destroy` leaves no key on either user. The users'
tokens are Pulumi secrets: in no process's argv or environment during `up`, never readable in the
state."""

from __future__ import annotations

import pytest
from pulumi import automation as auto

from agentfleet import Fleet
from agentfleet.forge import key_body
from tests.e2e.gitea_server import GiteaServer, wait_until
from tests.e2e.process_sampler import ProcessSampler, config_channel
from tests.e2e.support import FleetStack, docker_objects
from tests.e2e.test_forge_gitea import fleet_config, run_ok

# Agents of their own (the session's Gitea serves test_forge_gitea.py too, whose agents push agent/agent-a).
USERS = {"pusher-a": "bot-pusher-a", "pusher-b": "bot-pusher-b"}


def user_keys(gitea: GiteaServer, stack: FleetStack) -> dict[str, dict[str, dict]]:
    """Per forge user, its keys of this stack by title."""
    return {user: {key["title"]: key for key in gitea.user_keys(user) if key["title"].startswith(f"agentfleet {stack.name}/")}
            for user in USERS.values()}


def test_each_agent_pushes_as_its_own_forge_user_from_up_to_destroy(gitea: GiteaServer, make_stack):
    stack: FleetStack = make_stack("forge-users")
    tokens = {user: gitea.add_user(user) for user in USERS.values()}
    gitea.grant(USERS["pusher-a"])  # pusher-b's user may not push yet
    config = fleet_config(gitea, tuple(USERS))
    for entry in config["agents"]:
        user = USERS[entry["name"]]
        entry["forge_user"] = {"name": user, "token": f"token-{user}"}
        stack.set_secret(f"token-{user}", tokens[user])
    stack.set_secret("forgeToken", gitea.token)
    stack.set_fleet(config)

    with pytest.raises(auto.CommandError) as refused:
        stack.stack.up(on_output=lambda _: None)
    assert (f'stack "{stack.name}", agent "pusher-b", field "forge_user.name": bot-pusher-b may not push to '
            f"{gitea.repository}; give it write access") in str(refused.value)
    resources = stack.stack.export_stack().deployment.get("resources") or []
    assert [r["type"] for r in resources if r["type"] != "pulumi:pulumi:Stack"] == []
    assert docker_objects("container", f"agentfleet.stack={stack.name}") == []
    assert user_keys(gitea, stack) == {user: {} for user in USERS.values()}

    gitea.grant(USERS["pusher-b"])
    with ProcessSampler() as sampler:  # every process's argv and environment, all through the up
        outputs = stack.up()
    assert sampler.saw_its_marker()
    for user, token in tokens.items():
        holders = sampler.holders(token.encode(), except_variables=config_channel()[1])
        assert not holders, f"{user}'s token was in some process's argv or environment during up: {holders}"
    keys = user_keys(gitea, stack)
    for name, user in USERS.items():
        (key,) = keys[user].values()
        assert key["title"] == f"agentfleet {stack.name}/{name}"
        assert key_body(key["key"]) == key_body(outputs["agents"][name]["remote_public_key"])
    assert not [key for key in gitea.deploy_keys() if key["title"].startswith(f"agentfleet {stack.name}/")]

    with Fleet.from_outputs(outputs, stack.name) as client:
        for name in USERS:
            assert run_ok(client, name, "git rev-parse --abbrev-ref HEAD") == f"agent/{name}"  # cloned at boot
            run_ok(client, name, f"echo {name} > {name}.txt && git add . && "
                                 f"git commit -q -m 'work of {name}' && git push -q origin HEAD")
    expected = {f"refs/heads/agent/{name}": {user} for name, user in USERS.items()}

    def feed_state():  # Gitea records pushes from a queue, a moment after the push returns
        seen = {ref: users for ref, users in gitea.pushers().items() if ref in expected}
        return None if seen == expected else f"pushers {seen}"

    wait_until("Gitea's activity feed", feed_state, 30)
    for name in USERS:  # the commits keep the agent's own identity: only the push is the user's
        commit = gitea.call("GET", f"/repos/{gitea.repository}/commits?sha=agent/{name}&limit=1")[0]
        assert commit["commit"]["author"]["email"] == f"{name}@fleet.test"

    # A user key deleted on the forge is drift: the next `pulumi up` (refresh: always) registers it again.
    user = USERS["pusher-a"]
    (gone,) = keys[user].values()
    gitea.call("DELETE", f"/admin/users/{user}/keys/{gone['id']}")
    assert user_keys(gitea, stack)[user] == {}
    stack.up()
    (healed,) = user_keys(gitea, stack)[user].values()
    assert healed["id"] != gone["id"] and key_body(healed["key"]) == key_body(gone["key"])
    with Fleet.from_outputs(stack.outputs(), stack.name) as client:
        run_ok(client, "pusher-a", "git fetch -q origin && git push -q origin HEAD")  # the key works again

    state = stack.export()
    for user, token in tokens.items():
        assert token not in state, f"{user}'s token is readable in the state"

    stack.destroy()
    assert user_keys(gitea, stack) == {user: {} for user in USERS.values()}
