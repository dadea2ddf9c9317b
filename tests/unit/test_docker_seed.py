"""components/backends/docker/driver.py: what goes into an agent's container before it first
starts, and how its user namespace is read back, without an engine."""

from __future__ import annotations

import io
import tarfile
from types import SimpleNamespace

import pytest

from components.backends.docker.driver import (CLOUD_INIT_RESULT_DATA, SEED_DIR, DockerError, cloud_init_result,
                                               seed_archive, tar_of, user_namespace)
from components.backends.docker.policy import RECORD_DIR, policy_archive


def members(archive: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {member.name: member for member in tar.getmembers()}


def test_the_seed_is_roots_alone():
    found = members(seed_archive("agent-1", "agent-1", "#cloud-config\n"))
    assert list(found) == [SEED_DIR, f"{SEED_DIR}/user-data", f"{SEED_DIR}/meta-data"]
    assert all(member.uid == 0 and member.mode & 0o077 == 0 for member in found.values())


def test_the_directories_above_the_mounts_come_first_and_are_roots():
    """On a userns-remap engine the upload would otherwise make them the host root's (nobody inside)."""
    found = members(seed_archive("agent-1", "agent-1", "", ("/home/agent/workspace", "/var/lib/agentfleet/shared.git")))
    parents = ["home", "home/agent", "var", "var/lib", "var/lib/agentfleet"]
    assert list(found)[:len(parents)] == parents
    assert all(found[name].isdir() and (found[name].uid, found[name].gid, found[name].mode) == (0, 0, 0o755)
               for name in parents)
    assert "home/agent/workspace" not in found, "the mount point itself is the volume's"


def test_the_user_namespace_is_the_engines_unless_the_container_asked_for_the_hosts():
    remapping, plain = SimpleNamespace(remaps_users=True), SimpleNamespace(remaps_users=False)
    assert user_namespace(remapping, {"UsernsMode": ""}) == "remapped"
    assert user_namespace(remapping, {"UsernsMode": "host"}) == "none"
    assert user_namespace(plain, {}) == "none"


def test_the_policy_upload_gives_the_records_parents_to_root():
    archive, _, _ = policy_archive({"code": "x"})
    found = members(archive)
    parents = ["var", "var/log", "var/log/agentfleet"]
    assert RECORD_DIR == "/var/log/agentfleet/egress" and list(found)[:3] == parents
    assert all((found[name].uid, found[name].mode) == (0, 0o755) for name in parents)


class ArchiveOnly:
    """A container whose exec output came back empty: only its archive reads the file."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def get_archive(self, path: str):
        return iter([tar_of({path.lstrip("/"): (self.files[path], 0o644)}, {})]), {}


def test_cloud_init_result_is_read_again_when_the_wait_printed_nothing():
    result = b'{"v1": {"errors": ["oops"]}}\n'
    container = ArchiveOnly({CLOUD_INIT_RESULT_DATA: result})
    assert cloud_init_result(container, "") == {"v1": {"errors": ["oops"]}}
    assert cloud_init_result(container, '{"v1": {"errors": []}}') == {"v1": {"errors": []}}


def test_a_result_that_is_no_json_either_way_is_a_clear_error():
    with pytest.raises(DockerError, match="result.json.*is not JSON: 'garbled'"):
        cloud_init_result(ArchiveOnly({CLOUD_INIT_RESULT_DATA: b"garbled"}), "")
