"""A Docker agent's policy container, without an engine: what its field holds, what is uploaded,
and when the agent's container counts as running under its policy (components/backends/docker/policy.py)."""

from __future__ import annotations

import io
import subprocess
import tarfile
import threading
import time

from components.backends.docker.policy import (
    APPLY_LOG,
    STATUS,
    WAIT_FOR_POLICY,
    code_digest,
    joined,
    policed_state,
    policy_archive,
    policy_fields,
    policy_labels,
)
from components.cloudinit import AgentKeys, render_cloud_config
from components.egress import POLICY_PATHS, EgressPolicy
from tests.unit.spec_helpers import agent, load


def spec(**fields):
    return load({"agents": [agent("a", **fields)]}).agents[0]


def test_a_restricted_agent_declares_its_policy_an_open_one_only_the_code():
    restricted = policy_fields(spec(allow=["pypi.org:443"], dns=["10.0.0.53"]))
    assert restricted == {"code": code_digest(), "agent": "a", "destinations": ["pypi.org:443/tcp"], "dns": ["10.0.0.53"]}
    assert policy_fields(spec(egress="open")) == {"code": code_digest()}


def test_the_archive_holds_the_policy_and_its_code_and_names_what_a_lifted_policy_lacks():
    archive, digest, lacking = policy_archive(policy_fields(spec(egress="open")))
    names = tarfile.open(fileobj=io.BytesIO(archive)).getnames()
    assert "usr/local/lib/agentfleet/resolver" in names and "etc/agentfleet/egress.nft" not in names
    assert sorted(lacking) == sorted(POLICY_PATHS)
    again, same, _ = policy_archive(policy_fields(spec(egress="open")))
    assert same == digest
    _, other, lacking = policy_archive(policy_fields(spec(allow=["pypi.org:443"])))
    assert other != digest and lacking == ["/etc/agentfleet/dns-servers"]


def test_the_uploaded_files_are_rendered_from_the_field_and_a_changed_allow_list_changes_the_set():
    agent_ = spec(allow=["pypi.org:443", "10.0.0.0/24:53/udp"], dns=["10.0.0.53"])
    archive, digest, lacking = policy_archive(policy_fields(agent_))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        uploaded = {"/" + m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()
                    if "/" + m.name in POLICY_PATHS}
        assert {tar.getmember(path.lstrip("/")).mode for path in uploaded} == {0o600}
    assert uploaded == EgressPolicy.of(agent_).files() and lacking == []
    assert policy_archive(policy_fields(spec(allow=["pypi.org:443"], dns=["10.0.0.53"])))[1] != digest


def test_a_docker_agents_cloud_config_carries_no_policy():
    keys = AgentKeys("ssh-ed25519 AAAA op", "-----BEGIN KEY-----\nx\n-----END KEY-----", "ssh-ed25519 AAAA host")
    inside = render_cloud_config(spec(allow=["pypi.org:443"]), keys)
    outside = render_cloud_config(spec(allow=["pypi.org:443"]), keys, policy=False)
    assert "/etc/agentfleet/egress.nft" in inside and "agentfleet-resolver" not in outside
    assert "egress" not in outside and len(outside) < len(inside) / 2


def test_policy_labels_name_the_agent_served_not_as_an_agent():
    assert policy_labels({"agentfleet.stack": "s", "agentfleet.agent": "a"}) == {
        "agentfleet.stack": "s", "agentfleet.policy": "a"}


def container(id_: str, status: str, started: str, mode: str = "bridge") -> dict:
    return {"Id": id_, "State": {"Status": status, "StartedAt": started}, "HostConfig": {"NetworkMode": mode}}


def test_the_agent_runs_under_its_policy_only_in_the_policy_containers_current_namespace():
    policy = container("p1", "running", "2026-12-06T20:00:01.5Z")
    agent_ = container("a1", "running", "2026-12-06T20:00:01.25Z", "container:p1")
    # Fractions of varying length compare as times: .25 is before .5.
    assert not joined(agent_, policy)
    assert policed_state(agent_, policy) == "running outside its policy container's network (started again since)"
    later = container("a1", "running", "2026-12-06T20:00:02.1Z", "container:p1")
    assert joined(later, policy) and policed_state(later, policy) == "running"
    assert policed_state(later, None) == "running without its policy container"
    assert policed_state(later, container("p1", "exited", "2026-12-06T20:00:01.5Z")) == \
        "running, its policy container exited"
    assert policed_state(container("a1", "exited", "x", "container:p1"), None) == "exited"


def test_a_state_whose_field_carried_the_files_updates_the_policy_in_place():
    from components.backends.docker.driver import ContainerDriver
    from components.reconciled import Reconciler

    declared = {"name": "agentfleet-s-a", "image": "i", "egress": policy_fields(spec(allow=["pypi.org:443"]))}
    earlier = {**declared, "egress": {"code": code_digest(), "ruleset": "table inet agentfleet {}\n",
                                      "names": '{"names": []}\n'}}
    plan = Reconciler(ContainerDriver()).diff(earlier, declared)
    assert plan.changed == ["egress"] and plan.replaces == []


def wait_for_policy(tmp_path, status_file_text: str, written_later: str, log: str = "") -> subprocess.CompletedProcess:
    """The driver's wait (WAIT_FOR_POLICY) under dash, on a status file that holds `status_file_text`
    at first and `written_later` 0.3 s later, as an entrypoint's write may land."""
    status, apply_log = tmp_path / "status", tmp_path / "apply.log"
    status.write_text(status_file_text)
    apply_log.write_text(log)
    script = WAIT_FOR_POLICY.replace(STATUS, str(status)).replace(APPLY_LOG, str(apply_log))
    writer = threading.Timer(0.3, status.write_text, (written_later,))
    writer.start()
    try:
        return subprocess.run(["sh", "-c", script, "wait-for-policy", str(int(time.time()) + 10)],
                              capture_output=True, text=True, timeout=20)
    finally:
        writer.join()


def test_the_wait_reads_the_status_once_written_not_the_empty_file_its_redirection_made(tmp_path):
    # The entrypoint's `echo 0 >status` creates the file before it writes: an empty status was
    # read as `exit ""` ("Illegal number", exit 2) and failed a healthy agent's creation.
    applied = wait_for_policy(tmp_path, "", "0\n")
    assert (applied.returncode, applied.stderr) == (0, "")
    failed = wait_for_policy(tmp_path, "", "3\n", log="nft: syntax error\n")
    assert (failed.returncode, failed.stdout) == (3, "nft: syntax error\n")

