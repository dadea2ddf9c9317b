"""The remote-host rig itself: a test run that dies leaves nothing behind for long."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.e2e.remote_hosts import RIG_ROOT, remove_abandoned_rigs
from tests.e2e.support import PROJECT_ROOT

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


def start_holder() -> tuple[subprocess.Popen[str], str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    rig_id = holder.stdout.readline().strip()
    assert rig_id, f"the holder exited with {holder.wait()} before its host was up"
    assert leftovers(rig_id), "the holder's rig is not there to be removed"
    return holder, rig_id


def test_sigterm_removes_the_rig() -> None:
    holder, rig_id = start_holder()
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=30) == 128 + signal.SIGTERM
    assert leftovers(rig_id) == []


def test_a_killed_run_is_removed_by_the_next() -> None:
    holder, rig_id = start_holder()
    holder.kill()
    holder.wait()
    assert leftovers(rig_id), "SIGKILL gave the rig no chance to clean up, so something must be left"
    assert rig_id in remove_abandoned_rigs()
    assert leftovers(rig_id) == []
