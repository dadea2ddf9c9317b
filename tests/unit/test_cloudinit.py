"""components/cloudinit.py: one agent -> one cloud-config carrying its identity, keys and remote."""

import json

import pytest
import yaml

from components.cloudinit import REMOTE_KEY_PATH, AgentKeys, render_cloud_config
from components.keys import generate_ed25519
from components.spec import load_fleet
from tests.unit.git_reader import git_config
from tests.unit.test_egress import FIXTURES, SAMPLE

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


def test_git_identity_and_remote_settings_are_in_the_agents_gitconfig():
    document = yaml.safe_load(render_cloud_config(
        spec(remote="ssh://git@gitserver:2222/app.git", known_hosts=[KNOWN], packages=["jq"]),
        keys(remote_private_key=generate_ed25519("remote")[0]),
    ))
    gitconfig = git_config(files(document)["/home/agent/.gitconfig"]["content"])
    assert (gitconfig["user.name"], gitconfig["user.email"]) == ("Agent One", "a1@example.com")
    assert gitconfig["agentfleet.remote"] == "ssh://git@gitserver:2222/app.git"
    assert gitconfig["agentfleet.branch"] == "agent/agent-1"
    assert gitconfig["core.sshcommand"].startswith(f"ssh -i {REMOTE_KEY_PATH} ")
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
    assert git_config(files(document)["/home/agent/.gitconfig"]["content"])["credential.helper"] == "store"


def test_agent_without_remote_has_no_credential_files():
    document = yaml.safe_load(render_cloud_config(spec(), keys()))
    assert REMOTE_KEY_PATH not in files(document)
    assert "/home/agent/.git-credentials" not in files(document)


def test_restricted_egress_ships_the_policy_the_resolver_and_the_per_boot_script():
    agent = spec(remote="ssh://git@gitserver:2222/app.git", known_hosts=[KNOWN],
                 allow=["pypi.org:443", "*.example.com:443", "10.0.0.0/24:53/udp"], dns=["10.0.0.2"])
    written = files(yaml.safe_load(render_cloud_config(agent, keys())))
    assert json.loads(written["/etc/agentfleet/egress.json"]["content"])["names"] == [
        {"name": "gitserver", "protocol": "tcp", "port": 2222},
        {"name": "pypi.org", "protocol": "tcp", "port": 443},
        {"name": "*.example.com", "protocol": "tcp", "port": 443},
    ]
    assert "ip daddr 10.0.0.0/24 udp dport 53 accept" in written["/etc/agentfleet/egress.nft"]["content"]
    assert written["/etc/agentfleet/dns-servers"]["content"] == "10.0.0.2\n"
    for path in ("/var/lib/cloud/scripts/per-boot/10-agentfleet-egress", "/usr/local/lib/agentfleet/resolver",
                 "/etc/agentfleet/egress.nft", "/etc/agentfleet/egress.json"):
        assert written[path]["owner"] == "root:root" and written[path]["permissions"] in ("0o700", "0o600"), path
        assert "defer" not in written[path]  # root's file, written before the agent user exists


def test_a_vms_policy_files_are_the_recorded_ones():
    written = files(yaml.safe_load(render_cloud_config(load_fleet("test", {"agents": [SAMPLE]}, {}.get).agents[0], keys())))
    for suffix, path in (("nft", "egress.nft"), ("json", "egress.json"), ("dns-servers", "dns-servers")):
        assert written[f"/etc/agentfleet/{path}"]["content"] == (FIXTURES / f"sample.{suffix}").read_text()


def test_open_egress_ships_no_policy_only_the_script_that_lifts_one():
    written = files(yaml.safe_load(render_cloud_config(spec(egress="open"), keys())))
    assert not any(path.startswith("/etc/agentfleet/") for path in written)
    assert [path for path in written if path.startswith("/var/lib/cloud/scripts/per-boot/")] == [
        "/var/lib/cloud/scripts/per-boot/10-agentfleet-egress"]


def test_every_git_process_traces_to_the_audit_directory():
    written = files(yaml.safe_load(render_cloud_config(spec(), keys())))
    assert git_config(written["/etc/gitconfig"]["content"])["trace2.eventtarget"] == "/var/log/agentfleet/git-trace2"


@pytest.mark.parametrize("name", ["Robert \"Bobby\" O'Brien; Jr", "Ann # not a comment", "Zoë \\ 漢字"])
def test_git_reads_back_the_identity_exactly_as_configured(name):
    agent = spec(identity={"name": name, "email": "bobby@example.com"})
    written = files(yaml.safe_load(render_cloud_config(agent, keys())))
    assert git_config(written["/home/agent/.gitconfig"]["content"])["user.name"] == name


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


def test_the_first_clone_script_is_where_agentfleet_clone_runs_it():
    """`agentfleet clone` runs the agent's own first-boot script at FIRST_CLONE."""
    from agentfleet.workspace import FIRST_CLONE

    document = yaml.safe_load(render_cloud_config(spec(remote="git@github.com:acme/app.git"), keys()))
    script = files(document)[FIRST_CLONE]
    assert script["permissions"] == "0o755" and "git clone" in script["content"]
    assert ["runuser", "-l", "agent", "-c", FIRST_CLONE] in document["runcmd"]


def test_without_the_shared_files_the_document_keeps_only_what_differs_per_agent():
    """On agentfleet's agent image the hooks and the first-clone script are the image's: the
    document still runs them (runcmd, core.hooksPath) but does not carry them."""
    from agentfleet.workspace import FIRST_CLONE
    from components.cloudinit import shared_files
    from components.pushguard import HOOKS_DIR

    agent = spec(remote="git@github.com:acme/app.git")
    full = yaml.safe_load(render_cloud_config(agent, keys()))
    lean = yaml.safe_load(render_cloud_config(agent, keys(), shared=False))
    shared = {entry["path"] for entry in shared_files()}
    assert FIRST_CLONE in shared and f"{HOOKS_DIR}/pre-push" in shared and f"{HOOKS_DIR}/pre-commit" in shared
    assert set(files(full)) - set(files(lean)) == shared
    assert lean["runcmd"] == full["runcmd"] and ["runuser", "-l", "agent", "-c", FIRST_CLONE] in lean["runcmd"]
    assert files(lean)["/etc/gitconfig"] == files(full)["/etc/gitconfig"]


def test_a_lean_clone_is_asked_for_only_when_configured():
    """`clone:` reaches the first clone through the agent's git config; without it the document
    holds nothing new, so agents made before `clone` existed see no update."""
    def gitconfig(**fields):
        document = yaml.safe_load(render_cloud_config(spec(**fields), keys()))
        return git_config(files(document)["/home/agent/.gitconfig"]["content"])

    remote = {"remote": "https://git.example.com/acme/app.git"}
    lean = gitconfig(**remote, clone={"depth": 1, "filter": "blob:none"})
    assert (lean["agentfleet.depth"], lean["agentfleet.filter"]) == ("1", "blob:none")
    assert not {"agentfleet.depth", "agentfleet.filter"} & set(gitconfig(**remote))
    assert "agentfleet.filter" not in gitconfig(**remote, clone={"depth": 3})
