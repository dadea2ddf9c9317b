"""components/reapply.py: what an in-place change runs, and that no secret is on its command line.
The Multipass path runs against a fake `multipass` that records argv and stdin."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from components.backends.multipass.driver import MultipassError, apply_in_place
from components.cloudinit import AgentKeys, render_cloud_config
from components.keys import generate_ed25519
from components.reapply import SCRIPT, update_plan
from tests.key_marks import PRIVATE_KEY
from tests.unit.spec_helpers import agent, load

TOKEN = "ghp_secretTokenValue123"


def document(**fields) -> str:
    spec = load({"agents": [agent(**fields)]}, {"tok": TOKEN, "key": generate_ed25519("k")[0]}).agents[0]
    secret = spec.credential.secret
    keys = AgentKeys("ssh-ed25519 AAAAop operator", generate_ed25519("h")[0], "ssh-ed25519 AAAAhost h",
                     remote_private_key=secret if spec.credential.kind == "ssh_key" else None,
                     https_token=secret if spec.credential.kind == "https_token" else None)
    return render_cloud_config(spec, keys)


def test_an_update_writes_every_file_again_then_runs_the_policy_script():
    plan = update_plan(document())
    assert json.loads(plan.steps) == {"cloud_final_modules": [["write_files", "always"], ["write_files_deferred", "always"]]}
    assert plan.scripts == ("/var/lib/cloud/scripts/per-boot/10-agentfleet-egress",)


def test_files_the_new_document_lacks_are_removed_the_ones_it_has_are_kept():
    https = update_plan(document(remote="https://git.example.org/a/b.git", credential={"https_token": "tok"}))
    assert "/home/agent/.ssh/id_remote" in https.remove and "/home/agent/.git-credentials" not in https.remove
    key = update_plan(document(remote="git@git.example.org:a/b.git", known_hosts=["git.example.org ssh-ed25519 AAAA"],
                               credential={"ssh_key": "key"}))
    assert "/home/agent/.git-credentials" in key.remove and "/home/agent/.ssh/id_remote" not in key.remove
    opened = update_plan(document(egress="open"))
    assert {"/etc/agentfleet/egress.nft", "/etc/agentfleet/egress.json", "/usr/local/lib/agentfleet/resolver"} <= set(opened.remove)


def test_the_command_line_carries_no_secret():
    text = document(remote="https://git.example.org/a/b.git", credential={"https_token": "tok"})
    argv = update_plan(text).argv("-", scrub=True)
    assert argv[:3] == ["sh", "-c", SCRIPT]
    assert not any(TOKEN in arg or PRIVATE_KEY in arg for arg in argv)


FAKE = """#!{python}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "stdin": sys.stdin.read()}}) + "\\n")
sys.stderr.write(os.environ.get("FAKE_STDERR", ""))
sys.exit(int(os.environ.get("FAKE_STATUS", "0")))
"""


@pytest.fixture
def fake_multipass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    executable = tmp_path / "bin" / "multipass"
    executable.parent.mkdir()
    executable.write_text(FAKE.format(python=sys.executable))
    executable.chmod(0o755)
    monkeypatch.setenv("PATH", f"{executable.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.jsonl"))
    return tmp_path / "calls.jsonl"


def test_contract_multipass_update_sends_the_document_on_stdin_of_exec_as_root(fake_multipass):
    text = document(remote="https://git.example.org/a/b.git", credential={"https_token": "tok"})
    apply_in_place("agent-1", "agentfleet-s-agent-1", text)
    (call,) = [json.loads(line) for line in fake_multipass.read_text().splitlines()]
    assert call["argv"][:5] == ["exec", "agentfleet-s-agent-1", "--", "sudo", "sh"]
    assert call["argv"][call["argv"].index("-c") + 2:][:3] == ["agentfleet-apply", "-", "scrub"]
    assert call["stdin"] == text and TOKEN in call["stdin"]
    assert not any(TOKEN in arg for arg in call["argv"])


def test_contract_a_failed_multipass_update_names_the_agent_and_what_to_do(fake_multipass, monkeypatch):
    monkeypatch.setenv("FAKE_STATUS", "2")
    monkeypatch.setenv("FAKE_STDERR", "exec failed: cannot connect to the multipass socket\n")
    with pytest.raises(MultipassError, match="agent agent-1 .*applying the new cloud-config failed.*daemon is not running"):
        apply_in_place("agent-1", "agentfleet-s-agent-1", document())


def test_the_document_is_valid_yaml_for_every_credential_kind():
    for fields in ({}, {"remote": "https://git.example.org/a/b.git", "credential": {"https_token": "tok"}}):
        assert yaml.safe_load(document(**fields))["write_files"]
