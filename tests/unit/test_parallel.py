"""for_each: bounded, ordered, each agent's failure its own, and never what keeps a process alive."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from agentfleet.errors import AgentfleetError
from agentfleet.parallel import for_each
from tests.e2e.support import PROJECT_ROOT


def test_results_come_in_the_order_of_names_with_each_failure_its_own():
    def task(name: str) -> str:
        if name == "b":
            raise AgentfleetError("b is down")
        time.sleep(0.05 if name == "a" else 0)
        return name.upper()

    results = for_each(["a", "b", "c"], task, parallel=3)
    assert list(results) == ["a", "b", "c"]
    assert results["a"] == "A" and results["c"] == "C" and str(results["b"]) == "b is down"


def test_at_most_parallel_tasks_run_at_once():
    running, most, lock = 0, 0, threading.Lock()

    def task(name: str) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    for_each([f"agent-{n}" for n in range(12)], task, parallel=3)
    assert most == 3


def test_a_bug_in_a_task_propagates():
    with pytest.raises(ZeroDivisionError):
        for_each(["a"], lambda name: 1 / 0, parallel=1)


def test_tasks_in_flight_do_not_keep_the_process_alive():
    """A dashboard's poller (a background thread) mid-reading when Ctrl-C ends the main thread:
    the process ends now, not when the agents' commands would have (here 600 s)."""
    script = ("import threading, time\n"
              "from agentfleet.parallel import for_each\n"
              "threading.Thread(target=for_each, args=(['a', 'b'], lambda name: time.sleep(600), 2), daemon=True).start()\n"
              "time.sleep(0.5)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, timeout=120, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
