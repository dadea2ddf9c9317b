"""The remote-host rig itself: a test run that dies leaves nothing behind for long."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.remote_hosts import NETNS_DIR, REMAP_FILES, REMAP_USER, RIG_ROOT, RemoteHosts, remove_abandoned_rigs
from tests.e2e.support import PROJECT_ROOT
from tests.shared_paths import SHARED_PATHS

pytestmark = pytest.mark.usefixtures("host_unchanged")

# A test run holding one host until killed: prints the rig's id once the host answers.
HOLDER = """
import sys, time
from tests.e2e.remote_hosts import RemoteHosts
with RemoteHosts(1) as rig:
    print(rig.id, flush=True)
    time.sleep(120)
"""


def leftovers(rig_id: str) -> list[str]:
    """What of the rig still exists: its data, namespaces, bridge, processes."""
    found = [str(path) for path in (RIG_ROOT / rig_id, Path(f"/sys/class/net/afbr{rig_id}")) if path.exists()]
    found += [line for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
              if line.startswith(f"af{rig_id}-")]
    found += [f"pid {pid}" for pid in os.listdir("/proc") if pid.isdigit() and _mentions(pid, rig_id)]
    return found


def _mentions(pid: str, rig_id: str) -> bool:
    try:
        return f"agentfleet-test/{rig_id}/".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.fixture
def held() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A holder process and its rig's id. What its `ip netns add` made of /run/netns is this
    test's to undo: a holder killed outright cannot."""
    owner = object()
    with SHARED_PATHS.changing(owner, NETNS_DIR):
        process = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        rig_id = process.stdout.readline().strip()
    try:
        assert rig_id, f"the holder exited with {process.wait()} before its host was up"
        assert leftovers(rig_id), "the holder's rig is not there to be removed"
        yield process, rig_id
    finally:
        if process.poll() is None:  # the test failed before it ended the holder: SIGTERM cleans up
            process.terminate()
            process.wait(timeout=30)
        SHARED_PATHS.release(owner)


def test_sigterm_removes_the_rig(held) -> None:
    holder, rig_id = held
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=30) == 128 + signal.SIGTERM
    assert leftovers(rig_id) == []


def test_a_killed_run_is_removed_by_the_next(held) -> None:
    holder, rig_id = held
    holder.kill()
    holder.wait()
    assert leftovers(rig_id), "SIGKILL gave the rig no chance to clean up, so something must be left"
    assert rig_id in remove_abandoned_rigs()
    assert leftovers(rig_id) == []


def test_a_remapped_host_remaps_without_touching_the_machines_user_files() -> None:
    """The remap user and its ranges exist in that dockerd's mount namespace only."""
    files = {name: (Path("/etc") / name).read_bytes() if (Path("/etc") / name).exists() else None
             for name in REMAP_FILES}
    with RemoteHosts(1, remapped=frozenset({"host-1"})) as rig:
        host = rig.host("host-1")
        engine = host.local_docker()
        try:
            info = engine.info()
        finally:
            engine.close()
        assert "name=userns" in info["SecurityOptions"]
        assert info["DockerRootDir"] == f"{host.data_root}/{host.remapped_root}.{host.remapped_root}"
        assert subprocess.run(["getent", "passwd", REMAP_USER], capture_output=True).returncode == 2
        assert {name: (Path("/etc") / name).read_bytes() if (Path("/etc") / name).exists() else None
                for name in REMAP_FILES} == files
    assert leftovers(rig.id) == []


def test_only_hosts_the_rig_has_can_be_remapped() -> None:
    with pytest.raises(ValueError, match=r"remapped names hosts the rig does not have: \['host-3'\]"):
        RemoteHosts(2, remapped=frozenset({"host-3"}))
