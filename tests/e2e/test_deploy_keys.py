"""A generated deploy key from `pulumi up` to a working clone, as a user goes: the first-boot
clone fails (the key is not registered yet) and `doctor` says so; `deploy-keys` lists the key
for its remote; once it is registered on the git server, `clone` makes the first clone and
`doctor` passes. The CLI reads the real stack (`pulumi stack output`), as `--stack` does."""

from __future__ import annotations

import io
import json

from agentfleet.cli import main as cli
from tests.e2e.support import FleetStack, GitServer

AGENT = "keyed"
WORKSPACE = "/home/agent/workspace"


def test_deploy_keys_then_clone_then_doctor(git_server: GitServer, make_stack, monkeypatch):
    stack: FleetStack = make_stack("keys")
    stack.set_fleet({"attach_networks": [git_server.network], "agents": [
        {"name": AGENT, "identity": {"name": "Keyed", "email": "keyed@fleet.test"},
         "remote": git_server.url, "known_hosts": [git_server.known_hosts_line]},  # credential: generate
    ]})
    stack.up()
    for name, value in {**stack.env, "AGENTFLEET_PERSIST": "0"}.items():
        monkeypatch.setenv(name, value)  # `pulumi stack output` runs with the process environment

    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = cli(["--stack", stack.name, "--cwd", str(stack.project_dir), *argv], out, err)
        return status, out.getvalue(), err.getvalue()

    status, out, _ = run("doctor")
    assert status == 1
    assert f"  FAIL  workspace     no clone of {git_server.url} in {WORKSPACE}\n" in out
    hint = f"hint: register its deploy key on the remote (agentfleet deploy-keys), then: agentfleet clone {AGENT}"
    assert hint in out

    status, out, err = run("deploy-keys", "--json")
    assert (status, err) == (0, "")
    (key,) = json.loads(out)
    assert {field: key[field] for field in ("agent", "remote", "title", "read_only")} == {
        "agent": AGENT, "remote": git_server.url, "title": f"agentfleet {stack.name}/{AGENT}", "read_only": False}
    assert key["key"].startswith("ssh-ed25519 ")
    git_server.authorize(key["key"])  # what the user does on the forge's deploy-key page

    status, out, err = run("clone")
    assert (status, out, err) == (0, f"{AGENT}: cloned: {git_server.url} into {WORKSPACE} (branch agent/{AGENT})\n", "")
    status, out, _ = run("doctor")
    assert status == 0 and out.endswith("all 1 agents healthy\n"), out
    status, out, _ = run("exec", AGENT, "--", "git", "log", "-1", "--format=%s %D")
    assert (status, out) == (0, f"initial commit HEAD -> agent/{AGENT}, origin/main, origin/HEAD, main\n")
