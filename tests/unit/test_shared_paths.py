"""tests/shared_paths.py: parts of one run that change a shared host path each undo what they
made, in an order that works, and leave the path as the run found it.

The situation of issue 29, without the real cluster or rig (needs root, for the mount): the
cluster makes /run/netns because it is missing; the rig's `ip netns add` then bind-mounts it onto
itself; the cluster, stopping first, used to `rmdir` it and failed with EBUSY.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.shared_paths import SharedPaths, is_mount_point

CLUSTER, RIG = "the cluster", "the rig"


def bind_onto_itself(path: Path) -> None:
    """What `ip netns add` does to /run/netns when it is not a mount point yet."""
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "netns"
    yield path
    while is_mount_point(path):  # a failed test's mounts
        subprocess.run(["umount", str(path)], check=True)


def cluster_then_rig(shared: SharedPaths, path: Path) -> None:
    with shared.changing(CLUSTER, path):
        path.mkdir(exist_ok=True)
    with shared.changing(RIG, path):
        bind_onto_itself(path)


def test_a_directory_bind_mounted_onto_itself_is_a_mount_point(netns):
    netns.mkdir()
    assert not is_mount_point(netns)
    bind_onto_itself(netns)
    assert is_mount_point(netns)


def test_control_the_old_teardown_fails_on_the_rigs_mount(netns):
    cluster_then_rig(SharedPaths(), netns)
    with pytest.raises(OSError) as raised:
        netns.rmdir()  # what Cluster.stop did with a directory it had made
    assert raised.value.errno == errno.EBUSY


def test_the_cluster_stopping_first_leaves_the_path_to_the_rig_which_puts_it_back(netns):
    shared = SharedPaths()
    cluster_then_rig(shared, netns)
    shared.release(CLUSTER)
    assert is_mount_point(netns), "the rig still uses its mount"
    assert shared.pending() == {netns: [CLUSTER, RIG]}
    shared.release(RIG)
    assert not netns.exists()
    assert shared.pending() == {}


def test_the_rig_stopping_first_takes_its_mount_and_leaves_the_cluster_its_directory(netns):
    shared = SharedPaths()
    cluster_then_rig(shared, netns)
    shared.release(RIG)
    assert netns.is_dir() and not is_mount_point(netns)
    shared.release(CLUSTER)
    assert not netns.exists()


def test_a_path_the_run_found_is_left_as_it_was(netns):
    netns.mkdir()
    bind_onto_itself(netns)
    shared = SharedPaths()
    cluster_then_rig(shared, netns)  # the directory and the mount were there already
    shared.release(RIG)
    shared.release(CLUSTER)
    assert is_mount_point(netns)
    assert shared.pending() == {}


def test_a_directory_something_else_put_files_in_is_not_removed(netns):
    shared = SharedPaths()
    with shared.changing(CLUSTER, netns):
        netns.mkdir()
    (netns / "af123-1").touch()  # a namespace of another process, which this one does not know of
    shared.release(CLUSTER)
    assert (netns / "af123-1").exists()
