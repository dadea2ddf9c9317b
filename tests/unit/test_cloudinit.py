"""components/cloudinit.py: one agent -> one cloud-config carrying its identity, keys and remote."""

import subprocess

import pytest
import yaml

from components.cloudinit import EGRESS_PER_BOOT, REMOTE_KEY_PATH, SCRIPT_DIR, SCRIPTS, AgentKeys, render_cloud_config
from components.keys import generate_ed25519
from components.spec import load_fleet

KNOWN = "[gitserver]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def spec(**fields):
    raw = {"agents": [{"name": "agent-1", "identity": {"name": "Agent One", "email": "a1@example.com"}, **fields}]}
    return load_fleet("test", raw, {}.get).agents[0]


def keys(**extra):
    host_private, host_public = generate_ed25519("host")
    return AgentKeys(operator_public_key=generate_ed25519("op")[1], host_private_key=host_private,
                     host_public_key=host_public, **extra)


def files(document):
    return {entry["path"]: entry for entry in document["write_files"]}


def git_config(content, tmp_path):
    """The settings git itself reads from a rendered .gitconfig."""
    path = tmp_path / "gitconfig"
    path.write_text(content)
    listed = subprocess.run(["git", "config", "--file", str(path), "--null", "--list"],
                            capture_output=True, text=True, check=True).stdout
    return dict(entry.split("\n", 1) for entry in listed.split("\0") if entry)


def test_document_is_cloud_config_with_agent_user_and_pinned_host_key():
    material = keys()
    text = render_cloud_config(spec(), material)
    assert text.startswith("#cloud-config\n")
    document = yaml.safe_load(text)
    (user,) = document["users"]
    assert user["name"] == "agent" and user["ssh_authorized_keys"] == [material.operator_public_key]
    assert document["ssh_keys"]["ed25519_private"].strip() == material.host_private_key.strip()
    assert document["ssh_pwauth"] is False and document["disable_root"] is True
    assert "packages" not in document  # no extra packages: no apt-get update at boot
    assert "command -v git" in document["bootcmd"][0][2]  # git where the image lacks it


def test_git_identity_and_remote_settings_are_in_the_agents_gitconfig(tmp_path):
    document = yaml.safe_load(render_cloud_config(
        spec(remote="ssh://git@gitserver:2222/app.git", known_hosts=[KNOWN], packages=["jq"]),
        keys(remote_private_key=generate_ed25519("remote")[0]),
    ))
    settings = git_config(files(document)["/home/agent/.gitconfig"]["content"], tmp_path)
    assert settings["user.name"] == "Agent One" and settings["user.email"] == "a1@example.com"
    assert settings["agentfleet.remote"] == "ssh://git@gitserver:2222/app.git"
    assert settings["agentfleet.branch"] == "agent/agent-1"
    assert settings["core.sshcommand"].startswith(f"ssh -i {REMOTE_KEY_PATH} ")
    assert files(document)[REMOTE_KEY_PATH]["permissions"] == "0o600"
    assert files(document)["/home/agent/.ssh/known_hosts"]["content"].strip() == KNOWN
    assert document["packages"] == ["jq"]


def test_https_token_goes_to_a_private_credential_store_only():
    token = "ghp_exampletoken123"
    text = render_cloud_config(spec(remote="https://github.com/org/app.git"), keys(https_token=token))
    document = yaml.safe_load(text)
    store = files(document)["/home/agent/.git-credentials"]
    assert token in store["content"] and store["permissions"] == "0o600"
    assert text.count(token) == 1
    assert "helper = store" in files(document)["/home/agent/.gitconfig"]["content"]


def test_agent_without_remote_has_no_credential_files():
    document = yaml.safe_load(render_cloud_config(spec(), keys()))
    assert REMOTE_KEY_PATH not in files(document)
    assert "/home/agent/.git-credentials" not in files(document)


def test_restricted_egress_ships_the_policy_and_the_per_boot_script():
    agent = spec(remote="ssh://git@gitserver:2222/app.git", known_hosts=[KNOWN], allow=["pypi.org:443"])
    written = files(yaml.safe_load(render_cloud_config(agent, keys())))
    assert written["/etc/agentfleet/egress.conf"]["content"] == "gitserver 2222\npypi.org 443\n"
    script = written["/var/lib/cloud/scripts/per-boot/10-agentfleet-egress"]
    assert script["owner"] == "root:root" and script["permissions"] == "0o700"
    assert "defer" not in script  # root's file, written before the agent user exists


def test_a_docker_agent_runs_the_scripts_of_its_image_and_a_vm_gets_them_written():
    remote = {"remote": "ssh://git@gitserver:2222/app.git", "known_hosts": [KNOWN]}
    docker = render_cloud_config(spec(**remote), keys())
    written = files(yaml.safe_load(docker))
    assert f"{SCRIPT_DIR}/first-clone" not in written
    assert written[EGRESS_PER_BOOT]["content"] == f'#!/bin/sh\nexec {SCRIPT_DIR}/apply-egress "$@"\n'
    assert "iptables" not in docker and "git clone" not in docker
    for backend in ("lima", "multipass"):
        vm = files(yaml.safe_load(render_cloud_config(spec(backend=backend, **remote), keys())))
        assert vm[f"{SCRIPT_DIR}/first-clone"]["content"] == (SCRIPTS / "first-clone").read_text()
        assert vm[EGRESS_PER_BOOT]["content"] == (SCRIPTS / "apply-egress").read_text()


def test_the_image_installs_the_scripts_where_the_documents_run_them():
    dockerfile = (SCRIPTS.parent / "Dockerfile").read_text()
    assert f"COPY agentfleet/ {SCRIPT_DIR}/" in dockerfile
    assert {path.name for path in SCRIPTS.iterdir()} == {"first-clone", "apply-egress"}


def test_open_egress_ships_no_policy():
    written = files(yaml.safe_load(render_cloud_config(spec(egress="open"), keys())))
    assert "/etc/agentfleet/egress.conf" not in written
    assert not any(path.startswith("/var/lib/cloud/scripts/per-boot/") for path in written)


def test_every_git_process_traces_to_the_audit_directory():
    written = files(yaml.safe_load(render_cloud_config(spec(), keys())))
    assert "eventTarget = /var/log/agentfleet/git-trace2" in written["/etc/gitconfig"]["content"]


@pytest.mark.parametrize("name", ["Robert \"Bobby\" O'Brien; Jr", "Ann # not a comment", " Edge \\ Spaces "])
def test_git_reads_back_the_identity_exactly_as_configured(name, tmp_path):
    agent = spec(identity={"name": name, "email": "bobby@example.com"})
    written = files(yaml.safe_load(render_cloud_config(agent, keys())))
    assert git_config(written["/home/agent/.gitconfig"]["content"], tmp_path)["user.name"] == name


def test_an_ordinary_agent_needs_no_explicit_types():
    # Modes are written as strings that stay strings unquoted (0o644, u=rwx,go=rx): only odd
    # values from the fleet config need `!!str` to survive Multipass' re-serialisation.
    agent = spec(remote="ssh://git@gitserver:2222/app.git", known_hosts=[KNOWN], packages=["jq"])
    text = render_cloud_config(agent, keys(remote_private_key=generate_ed25519("remote")[0]))
    assert "!!" not in text


def test_strings_that_yaml_would_retype_unquoted_carry_their_type():
    text = render_cloud_config(spec(packages=["2048", "yes", "jq"]), keys())
    assert "- !!str '2048'\n- !!str 'yes'\n- jq\n" in text
    assert yaml.safe_load(text)["packages"] == ["2048", "yes", "jq"]
