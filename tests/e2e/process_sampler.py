"""Every process's command line and environment, sampled while something runs (a `pulumi up`).

Why sample: a secret handed to a short-lived process in its arguments (readable by every user)
or its environment (readable by its user and root) is there only while that process lives; one
`ps` after `up` sees none of it. Why a control: a sampler too slow for the processes it must see
would pass on nothing, so it plants short processes of its own during the run (one each
MARKER_EVERY_S: on a loaded machine one round of reading /proc can outlast a single one), with a
marker in their arguments and environment, and `saw_its_marker` says whether it caught both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

MARKER_VARIABLE = "AGENTFLEET_SAMPLER_MARKER"
MARKER_EVERY_S = 1.0  # planted once the run is under way, and again each second while it runs
MARKER_LIFE_S = 0.2  # about as long as the short processes of an `up` (ssh-keyscan, git, a launcher)
POLL_S = 0.02  # a round reads every process (a few ms of CPU): leave the cores to what is sampled
# Where each Python language host hands the program its configuration, decrypted secrets included:
# agentfleet's (scripts/toolchain, installed where Pulumi's installer is unreachable) on the
# program's stdin, which no process shows; the upstream pulumi-language-python in the PULUMI_CONFIG
# environment variable of the program's process (docs/security.md, Secrets).
CONFIG_VARIABLES = {"agentfleet": (), "upstream": (b"PULUMI_CONFIG",)}


def config_channel() -> tuple[str, tuple[bytes, ...]]:
    """Which language host the engine runs here, and the environment variables it hands the
    configuration in: the one place a sampler may legitimately see a configured secret."""
    found = shutil.which("pulumi-language-python")
    assert found, "no pulumi-language-python on PATH: run the tests after `. scripts/activate`"
    host = "agentfleet" if b"pulumi_language_python.py" in Path(found).read_bytes()[:4096] else "upstream"
    return host, CONFIG_VARIABLES[host]


class ProcessSampler:
    """A context manager: while inside, reads /proc/*/cmdline and /proc/*/environ in a loop."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, bytes]] = set()  # ("cmdline" | "environ", the file's content)
        self.rounds = 0
        self.marker = f"agentfleet-sampler-{uuid.uuid4().hex}"
        self._stop = threading.Event()
        self._sampling = threading.Thread(target=self._run, daemon=True)
        self._planting = threading.Thread(target=self._plant_while_running, daemon=True)
        self._planted = threading.Event()

    def __enter__(self) -> ProcessSampler:
        self._sampling.start()
        self._planting.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._planted.wait()  # a run shorter than MARKER_EVERY_S still gets its control
        self._stop.set()
        self._planting.join()
        self._sampling.join()

    def holders(self, needle: bytes, except_variables: tuple[bytes, ...] = ()) -> list[str]:
        """Where `needle` was seen: each argument or environment entry holding it (its start),
        but environment variables named in `except_variables`."""
        found = []
        for part, text in self.seen:
            for entry in text.split(b"\0"):
                if needle in entry and not (part == "environ" and entry.split(b"=", 1)[0] in except_variables):
                    found.append(f"{part}: {entry[:40]!r}")
        return found

    def saw_its_marker(self) -> bool:
        """Whether the planted process was seen, in its arguments and in its environment."""
        parts = {holder.split(":")[0] for holder in self.holders(self.marker.encode())}
        return parts == {"cmdline", "environ"}

    def _plant_while_running(self) -> None:
        while not self._stop.wait(MARKER_EVERY_S):
            # Two commands, so that sh stays (with one it may exec sleep, and the marker leaves argv).
            subprocess.run(["sh", "-c", f"sleep {MARKER_LIFE_S}; exit 0", "planted", self.marker],
                           env={**os.environ, MARKER_VARIABLE: self.marker}, check=True)
            self._planted.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit():
                    for part in ("cmdline", "environ"):
                        try:
                            self.seen.add((part, (proc / part).read_bytes()))
                        except OSError:
                            pass
            self.rounds += 1
            time.sleep(POLL_S)
