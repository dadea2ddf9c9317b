"""What the benchmarks share: a workbench (project copy, git server, deploy key) that cleans up
after itself, fleets of N agents, the "answers git over SSH" check, and small statistics.

Everything a benchmark makes carries the label `agentfleet.bench=<run id>` or belongs to a stack
of the workbench; `Workbench.close()` removes all of it, also after a failure or Ctrl-C. Every
wait is bounded; nothing talks to anything but loopback and the benchmark's own Docker networks.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

from components.backends import MachineContext
from components.backends.docker.backend import _port_free
from components.backends.docker.driver import client
from components.backends.docker.engines import held_ports
from components.image import agent_image_tag
from components.keys import generate_ed25519
from components.spec import FleetSpec, load_fleet
from tests.e2e.support import (
    REMOVE,
    FleetStack,
    GitServer,
    copy_project,
    docker,
    docker_objects,
    start_git_server,
)

SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
               "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"]
# The git command that says an agent is ready: its workspace holds the clone of the remote.
READY_COMMAND = "git -C workspace log -1 --format=%h"
GENERIC_ERRORS = ("an unhandled error occurred", "update failed", "Resource monitor has terminated")


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def seconds(value: float) -> float:
    return round(value, 2)


def load() -> float:
    """1-minute load average: other work on this 2-core machine (e.g. a qemu VM) shows up here."""
    return round(os.getloadavg()[0], 2)


def aim(what: str, measured: float, limit: float, unit: str, command: str, detail: str = "") -> dict[str, Any]:
    """One of the issue's aims as measured in this run: met when `measured` is at most `limit`.
    `command` is what measures it again; `detail` the figures the ratio comes from."""
    return {"aim": what, "measured": f"{measured:.2f}{unit}", "limit": f"≤ {limit:g}{unit}",
            "met": measured <= limit, "detail": detail, "command": command}


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


class Workbench:
    """A project copy, a git server with one deploy key, and everything made on their behalf."""

    def __init__(self, with_git_server: bool = True) -> None:
        self.run_id = uuid.uuid4().hex[:6]
        self.label = f"agentfleet.bench={self.run_id}"
        self.image = agent_image_tag()
        if subprocess.run(["docker", "image", "inspect", self.image], check=False, capture_output=True).returncode:
            raise SystemExit(f"the agent image {self.image} is missing: run scripts/setup (make bench does)")
        self.scratch = Path(tempfile.mkdtemp(prefix=f"agentfleet-bench-{self.run_id}-"))
        os.chmod(self.scratch, 0o700)  # deploy and operator keys of throwaway fleets live here
        self.project = copy_project(self.scratch / "project")
        self.stacks: list[FleetStack] = []
        self.git: GitServer | None = None
        self.deploy_key_private, deploy_key_public = generate_ed25519("bench-deploy-key")
        self.deploy_key_file = self.write_file("deploy-key", self.deploy_key_private)
        try:
            if with_git_server:
                self.git = start_git_server(self.image, label=self.label)
                self.git.authorize(deploy_key_public)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def write_file(self, name: str, text: str) -> Path:
        path = self.scratch / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o600)
        return path

    def stack(self, prefix: str) -> FleetStack:
        stack = FleetStack(self.project, f"{prefix}-{uuid.uuid4().hex[:6]}")
        self.stacks.append(stack)
        stack.set_secret("benchDeployKey", self.deploy_key_private)
        return stack

    def fleet(self, size: int, prefix: str = "a", remote: bool | str = True, ports: list[int] | None = None,
              **fleet_fields: Any) -> dict[str, Any]:
        """`size` agents (names a-1 … a-N) that clone the git server's repository (or `remote`,
        another URL on it) on first boot; `remote=False`: no remote. `ports` pins their SSH ports."""
        git_fields: dict[str, Any] = {}
        if remote and self.git is not None:
            url = remote if isinstance(remote, str) else self.git.url
            git_fields = {"remote": url, "known_hosts": [self.git.known_hosts_line],
                          "credential": {"ssh_key": "benchDeployKey"}}
        fleet: dict[str, Any] = {
            # The image is pinned for the whole run: a recipe changed meanwhile must not change it.
            "defaults": {"resources": {"cpus": 1, "memory": "256m", "pids": 128}, "image": self.image,
                         **git_fields},
            "agents": [{"name": f"{prefix}-{i}", "identity": {"name": f"Agent {i}", "email": f"{prefix}-{i}@bench.test"},
                        **({"ssh_port": ports[i - 1]} if ports else {})}
                       for i in range(1, size + 1)],
            **fleet_fields,
        }
        if self.git is not None:
            fleet["attach_networks"] = [self.git.network]
        return fleet

    def up(self, prefix: str, fleet: dict[str, Any], attempts: int = 3) -> tuple[FleetStack, float]:
        """A new stack of `fleet`, brought up; returns it and the seconds `pulumi up` took. A port
        that another process on this machine holds (preflight refuses) means another stack name,
        so other ports: up to `attempts` times."""
        for attempt in range(1, attempts + 1):
            stack = self.stack(prefix)
            stack.set_fleet(fleet)
            try:
                return stack, timed(lambda stack=stack: stack.pulumi("up", "--yes", "--skip-preview"))[0]
            except subprocess.CalledProcessError as error:
                self.discard_stack(stack)  # also what a failed create left behind
                if "is taken on host" not in (error.stdout or "") or attempt == attempts:
                    tail = "\n    ".join((error.stdout or "").strip().splitlines()[-12:])
                    print(f"  pulumi up of {stack.name} failed: {first_error(error.stdout or '')}\n    {tail}", flush=True)
                    raise
        raise AssertionError("unreachable")

    def discard_stack(self, stack: FleetStack) -> None:
        """Destroy a stack and remove whatever it left (a failed create can leave a container)."""
        try:
            stack.pulumi("destroy", "--yes", "--skip-preview")
        except subprocess.CalledProcessError:
            pass
        finally:
            try:
                stack.remove()
            except Exception as error:  # noqa: BLE001 - cleanup goes on regardless
                print(f"  (could not remove stack {stack.name}: {error})", flush=True)
            remove_labelled(f"agentfleet.stack={stack.name}")
            if stack in self.stacks:
                self.stacks.remove(stack)

    def close(self) -> None:
        for stack in list(self.stacks):
            self.discard_stack(stack)
        remove_labelled(self.label)
        if self.git is not None:
            self.git.remove()
        shutil.rmtree(self.scratch, ignore_errors=True)


def first_error(output: str) -> str:
    """The first specific error of `pulumi up` output (its diagnostics), not the generic last ones,
    with what the driver quoted after it (a policy's apply log): enough to tell what failed."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "error:" in line and not any(generic in line for generic in GENERIC_ERRORS):
            return " ".join(lines[index:index + 12])[:1500]
    return ""


def free_ports(count: int, start: int = 25000) -> list[int]:
    """`count` ports from `start` up that nothing listens on here, below the kernel's ephemeral
    range (whose ports outgoing connections take at any moment). A fleet of hundreds whose ports
    are derived from names almost surely meets one that other work on this machine holds
    (preflight refuses it); the benchmarks' large fleets pin ports from this range instead."""
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    found: list[int] = []
    for port in range(start, ephemeral):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"only {len(found)} free ports from {start} to {ephemeral}; {count} needed")


def free_fleet(bench: Workbench, prefix: str, size: int,
               attempts: int = 5) -> tuple[str, MachineContext, FleetSpec]:
    """For fleets made without `pulumi up`: a stack name (`prefix-N`) whose agents' ports are
    free here, checked as the product's preflight checks them (other work on this machine holds
    ports too), with its context and spec."""
    assert bench.git is not None
    for attempt in range(attempts):
        name = f"{prefix}-{attempt}"
        context = MachineContext(name, (bench.git.network,))
        spec = load_fleet(name, bench.fleet(size), lambda key: bench.deploy_key_private)
        ports = [agent.ssh_port or agent.preferred_port for agent in spec.agents]
        held = held_ports(client())
        if len(set(ports)) == len(ports) and not any(port in held or not _port_free("127.0.0.1", port) for port in ports):
            return name, context, spec
    raise RuntimeError(f"no stack name with {size} free SSH ports after {attempts} tries")


def remove_labelled(label: str) -> None:
    """Every container, then volume, then network carrying `label`."""
    for kind in ("container", "volume", "network"):
        names = docker_objects(kind, label)
        if names:
            docker(*REMOVE[kind], *names, check=False)


def answers_git(host: str, port: int, key_file: Path, known_hosts_file: Path, command: str = READY_COMMAND) -> bool:
    completed = subprocess.run(
        ["ssh", *SSH_OPTIONS, "-i", str(key_file), "-o", f"UserKnownHostsFile={known_hosts_file}",
         "-p", str(port), f"agent@{host}", command],
        check=False, capture_output=True, timeout=30,
    )
    return completed.returncode == 0 and bool(completed.stdout.strip())


def wait_until_answers(endpoints: list[tuple[str, int, Path, Path]], timeout_s: float,
                       command: str = READY_COMMAND, poll_s: float = 0.1) -> float:
    """Wait (in parallel, bounded) until every endpoint answers `command`; return the seconds of
    the slowest. Raises TimeoutError naming the agents that did not answer."""
    started = time.perf_counter()
    deadline = started + timeout_s

    def one(endpoint: tuple[str, int, Path, Path]) -> float | None:
        while time.perf_counter() < deadline:
            try:
                if answers_git(*endpoint, command=command):
                    return time.perf_counter() - started
            except subprocess.TimeoutExpired:
                pass
            time.sleep(poll_s)
        return None

    with ThreadPoolExecutor(max_workers=min(32, max(1, len(endpoints)))) as pool:
        results = list(pool.map(one, endpoints))
    late = [f"{host}:{port}" for (host, port, *_), result in zip(endpoints, results) if result is None]
    if late:
        raise TimeoutError(f"{len(late)} of {len(endpoints)} agents did not answer `{command}` "
                           f"over SSH within {timeout_s:g} s: {', '.join(late[:5])}")
    return max(r for r in results if r is not None)


def stack_endpoints(bench: Workbench, outputs: dict[str, Any], tag: str) -> list[tuple[str, int, Path, Path]]:
    """Key and known_hosts files for every agent of a stack's outputs, as OpenSSH wants them."""
    endpoints = []
    for name, agent in outputs["agents"].items():
        key = bench.write_file(f"{tag}/{name}.key", outputs["agent_private_keys"][name])
        known = bench.write_file(f"{tag}/{name}.known_hosts", agent["known_hosts"] + "\n")
        endpoints.append((agent["host"], int(agent["port"]), key, known))
    return endpoints
