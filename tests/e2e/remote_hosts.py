"""Remote Docker hosts on this one machine, for end-to-end tests: the test run makes them and
removes them.

Each host is a network namespace behind a veth pair on a bridge of the rig's own (a free
10.213.X.0/24: the machine's side is .1, host k is .(10+k)), running its own dockerd (own data
root, exec root, pidfile, socket, containerd namespace, address pools; iptables inside its own
namespace only) and its own sshd on its own address (own host key, pinned by the tests; one
operator key authorized for root). Namespaces share the file system, so sshd sets DOCKER_HOST
for every session: `docker system dial-stdio`, what an ssh:// Docker connection runs, then
reaches that host's dockerd and not the machine's.

Everything lives under RIG_ROOT/<rig id> and in interfaces and namespaces named after the id;
A host may run its dockerd with `userns-remap` (`RemoteHosts(2, remapped={"host-2"})`): its
containers' root is an unprivileged uid of this machine. The remap user and its subordinate
ranges exist only for that dockerd: it runs in a mount namespace of its own where /etc/passwd,
/etc/group, /etc/subuid and /etc/subgid are the rig's copies with the user added, so the machine's
own files never change.

`close()` removes it all (processes and their children, mounts, namespaces, veths, bridge,
data; /run/netns as the rig found it, once no other part of the run uses it:
tests/shared_paths.py), also when starting failed. A rig whose test run died without cleaning
up (SIGKILL) is removed by the next rig that starts. `python -m tests.e2e.remote_hosts [N]` times starting and
removing N hosts.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import docker
import pytest
import requests

from tests.shared_paths import SHARED_PATHS

RIG_ROOT = Path("/var/lib/agentfleet-test")
SUBNETS = ipaddress.ip_network("10.213.0.0/16")  # one free /24 of it per rig
READY_TIMEOUT = 30.0
POLL = 0.05
DATA_SIZE = "6g"  # a limit on the rig's tmpfs (images, containers, volumes of every host), not a reservation
SHUTDOWN_TIMEOUT = 3  # s a container gets to stop when its host goes down
STOP_TIMEOUT = 20.0
PRIVSEP_DIR = Path("/run/sshd")  # Debian's sshd refuses to start without it
NETNS_DIR = Path("/run/netns")  # where `ip netns add` keeps namespaces, making it a mount point
TOOLS = {"ip": "iproute2", "nsenter": "util-linux", "unshare": "util-linux", "mount": "mount",
         "dockerd": "docker.io", "docker": "docker.io", "iptables": "iptables",
         "sshd": "openssh-server", "ssh-keygen": "openssh-client"}
REMAP_USER = "agentfleet-remap"  # exists only in a remapped dockerd's mount namespace
REMAP_BASE = 300_000  # host k's containers' root is uid REMAP_BASE + (k - 1) * REMAP_SIZE
REMAP_SIZE = 65_536
REMAP_FILES = ("passwd", "group", "subuid", "subgid")


class RigError(Exception):
    """The rig could not start or stop a host; the message says which and shows its log."""


def _run(*argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if check and completed.returncode != 0:
        raise RigError(f"`{' '.join(argv)}` failed: {completed.stderr.strip()}")
    return completed


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise RigError(f"{name} not found: install {TOOLS[name]} (scripts/setup does)")
    return found


@dataclass(frozen=True)
class RemoteHost:
    """One host as a fleet config would name it, plus where its parts live on this machine."""

    name: str  # host-1, host-2, ...
    index: int
    netns: str
    address: str
    root: Path
    host_key: str  # "ssh-ed25519 AAAA..." of its sshd
    user: str = "root"
    remapped_root: int | None = None  # with userns-remap: the machine's uid its containers' root runs as

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@{self.address}"

    @property
    def known_hosts(self) -> str:
        """The line to pin (port 22, so the bare address)."""
        return f"{self.address} {self.host_key}"

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    def local_docker(self) -> docker.DockerClient:
        """A client on its socket directly, as someone logged in on the host sees its engine."""
        return docker.DockerClient(base_url=f"unix://{self.socket}", version="auto", timeout=30)


@dataclass
class _Processes:
    dockerd: subprocess.Popen[bytes] | None = None
    sshd: subprocess.Popen[bytes] | None = None


class RemoteHosts:
    """N remote hosts; a context manager: `with RemoteHosts(2) as rig: rig.hosts[0].url`."""

    def __init__(self, count: int = 2, rig_id: str | None = None, remapped: frozenset[str] = frozenset()) -> None:
        if not 1 <= count <= 30:
            raise ValueError("count must be from 1 to 30 (each host takes its own address pool)")
        unknown = set(remapped) - {f"host-{k}" for k in range(1, count + 1)}
        if unknown:
            raise ValueError(f"remapped names hosts the rig does not have: {sorted(unknown)}")
        self.count = count
        self.remapped = frozenset(remapped)
        self.id = rig_id or secrets.token_hex(3)
        self.root = RIG_ROOT / self.id
        self.bridge = f"afbr{self.id}"
        self.hosts: tuple[RemoteHost, ...] = ()
        self.gateway = ""  # this machine's address on the bridge: what the hosts (and their containers) reach it at
        self.operator_key = ""  # OpenSSH private key text, authorized for root on every host
        self.operator_public_key = ""
        self.timings: dict[str, float] = {}
        self._processes: dict[str, _Processes] = {}
        self._made = False  # whether RIG_ROOT/<id> is ours to remove
        self._previous_sigterm: Any = None

    # -- life of the rig --

    def __enter__(self) -> RemoteHosts:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Make and start every host; on any failure remove what was made, then raise."""
        if os.geteuid() != 0:
            raise RigError("the remote-host rig makes network namespaces and runs dockerd: run the tests as root")
        for tool in TOOLS:
            _tool(tool)
        self._catch_sigterm()
        started = time.monotonic()
        try:
            RIG_ROOT.mkdir(parents=True, exist_ok=True)
            with _rig_lock():
                _remove_abandoned()
                subnet = _free_subnet()
                self.gateway = str(subnet[1])
                self.root.mkdir(mode=0o700)
                self._made = True
                # Engines' data in memory: removing a loaded image from disk takes seconds.
                _run("mount", "-t", "tmpfs", "-o", f"mode=0700,size={DATA_SIZE}", f"agentfleet-test-{self.id}", str(self.root))
                if self.remapped:  # a remapped dockerd's root must traverse to its data root
                    self.root.chmod(0o701)
                (self.root / "owner").write_text(_owner_stamp(os.getpid()))
                _run("ip", "link", "add", self.bridge, "type", "bridge")
                _run("ip", "addr", "add", f"{self.gateway}/{subnet.prefixlen}", "dev", self.bridge)
                _run("ip", "link", "set", self.bridge, "up")
            self.operator_key, self.operator_public_key = _keypair(self.root / "operator")
            self.hosts = tuple(self._make_host(k, subnet) for k in range(1, self.count + 1))
            self.timings["made"] = time.monotonic() - started
            for host in self.hosts:
                self._launch(host)
            for host in self.hosts:
                self._wait_ready(host)
            self.timings["started"] = time.monotonic() - started
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop every host and remove everything the rig made; safe to call twice."""
        started = time.monotonic()
        try:
            self._stop_dockerds(self.hosts, remove_containers=True)
            if self._made:
                remove_rig(self.id)
                self._made = False
            SHARED_PATHS.release(self)  # /run/netns, once no other part of the run uses it
            for processes in self._processes.values():
                for process in (processes.dockerd, processes.sshd):
                    if process is not None:
                        process.wait()
        finally:
            self._restore_sigterm()
        self.timings["removed"] = time.monotonic() - started

    # -- one host down and up again --

    def host(self, name: str) -> RemoteHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host {name!r}; the rig has {', '.join(h.name for h in self.hosts)}")

    def stop(self, name: str, keep_sshd: bool = False) -> None:
        """The host goes down: its dockerd stops (its containers with it) and sshd with every
        session ends. Its address stays up, so connections are refused at once. With
        keep_sshd, only Docker is down: logins work, Docker does not answer."""
        host = self.host(name)
        self._stop_dockerds((host,), remove_containers=False)
        processes = self._processes[name]
        if not keep_sshd:
            _kill_trees(_netns_pids(host.netns))
            if processes.sshd is not None:
                processes.sshd.wait()
            processes.sshd = None
        processes.dockerd = None

    def start_again(self, name: str) -> None:
        """Start what stop() stopped (same data, key and address) and wait until it answers."""
        host = self.host(name)
        self._launch(host)
        self._wait_ready(host)

    def unplug(self, name: str) -> None:
        """The host stops answering at all (packets to it are dropped): connections time out."""
        _run("ip", "netns", "exec", self.host(name).netns, "iptables", "-I", "INPUT", "-i", "eth0", "-j", "DROP")

    def plug(self, name: str) -> None:
        _run("ip", "netns", "exec", self.host(name).netns, "iptables", "-D", "INPUT", "-i", "eth0", "-j", "DROP")

    # -- how a host is made --

    def _make_host(self, k: int, subnet: ipaddress.IPv4Network) -> RemoteHost:
        netns, veth, root = f"af{self.id}-{k}", f"afv{self.id}{k}", self.root / f"h{k}"  # names <= 15 chars
        address = str(subnet[10 + k])
        root.mkdir()
        with SHARED_PATHS.changing(self, NETNS_DIR):
            _run("ip", "netns", "add", netns)
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _run("ip", "link", "set", veth, "master", self.bridge, "up")
        _run("ip", "-n", netns, "addr", "add", f"{address}/{subnet.prefixlen}", "dev", "eth0")
        _run("ip", "-n", netns, "link", "set", "eth0", "up")
        _run("ip", "-n", netns, "link", "set", "lo", "up")
        _, host_key = _keypair(root / "ssh_host_ed25519_key")
        (root / "authorized_keys").write_text(self.operator_public_key + "\n")
        name = f"host-{k}"
        remapped_root = REMAP_BASE + (k - 1) * REMAP_SIZE if name in self.remapped else None
        daemon = {} if remapped_root is None else {"userns-remap": REMAP_USER}
        (root / "daemon.json").write_text(json.dumps(daemon) + "\n")  # not the machine's /etc/docker/daemon.json
        if remapped_root is not None:
            _write_remap_files(root / "etc", remapped_root)
        host = RemoteHost(name, k, netns, address, root, " ".join(host_key.split()[:2]), remapped_root=remapped_root)
        (root / "sshd_config").write_text(_sshd_config(host))
        return host

    def _launch(self, host: RemoteHost) -> None:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        pools = f"10.{220 + host.index}"  # inside its own namespace: never routed outside it
        dockerd = [
            _tool("dockerd"), "--config-file", str(host.root / "daemon.json"),
            "--data-root", str(host.data_root), "--exec-root", str(host.root / "exec"),
            "--pidfile", str(host.root / "docker.pid"), "--host", f"unix://{host.socket}",
            "--containerd-namespace", host.netns, "--containerd-plugins-namespace", f"{host.netns}-plugins",
            "--shutdown-timeout", str(SHUTDOWN_TIMEOUT), "--bip", f"{pools}.0.1/24", "--default-address-pool", f"base={pools}.128.0/17,size=24",
        ]
        if host.remapped_root is not None:
            dockerd = [_tool("unshare"), "--mount", "--propagation", "private", "--", "sh", "-c", _BIND_REMAP_FILES,
                       "bind-remap-files", str(host.root / "etc"), *dockerd]
        sshd = [_tool("sshd"), "-D", "-e", "-f", str(host.root / "sshd_config")]
        processes = self._processes.setdefault(host.name, _Processes())
        if processes.dockerd is None:
            processes.dockerd = self._in_netns(host, dockerd, "dockerd.log")
        if processes.sshd is None:
            processes.sshd = self._in_netns(host, sshd, "sshd.log")

    @staticmethod
    def _in_netns(host: RemoteHost, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        # nsenter changes the network namespace only: dockerd must see the machine's cgroup
        # mounts, which `ip netns exec` (a fresh /sys) would hide.
        with (host.root / log).open("ab") as output:
            return subprocess.Popen([_tool("nsenter"), f"--net=/run/netns/{host.netns}", "--", *argv],
                                    stdin=subprocess.DEVNULL, stdout=output, stderr=output, start_new_session=True)

    def _wait_ready(self, host: RemoteHost) -> None:
        processes = self._processes[host.name]
        assert processes.dockerd is not None and processes.sshd is not None
        _wait(f"{host.name}'s dockerd answering on {host.socket}", processes.dockerd, host.root / "dockerd.log",
              lambda: _docker_answers(host))
        _wait(f"{host.name}'s sshd answering on {host.address}:22", processes.sshd, host.root / "sshd.log",
              lambda: _ssh_banner(host.address))

    def _stop_dockerds(self, hosts: tuple[RemoteHost, ...], remove_containers: bool) -> None:
        """Stop these hosts' dockerds together (each stops its containers, within the
        shutdown timeout); removing the containers first is faster when they are not needed."""
        running = [(host, process) for host in hosts
                   if (process := self._processes.get(host.name, _Processes()).dockerd) is not None
                   and process.poll() is None]
        for host, process in running:
            if remove_containers:
                _remove_containers(host)
            process.terminate()
        for _, process in running:
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # -- SIGTERM (a CI timeout) must still run close() --

    def _catch_sigterm(self) -> None:
        try:
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_system_exit)
        except ValueError:  # not the main thread: leave signals alone
            self._previous_sigterm = None

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None



@contextmanager
def started_rig(rig: RemoteHosts) -> Iterator[RemoteHosts]:
    """The rig started for the block (a rig that cannot start fails the test, saying why), then
    removed whatever happened."""
    try:
        rig.start()
    except RigError as exc:
        pytest.fail(str(exc))
    try:
        yield rig
    finally:
        rig.close()


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


# Runs as dockerd's parent in its own mount namespace: the rig's copies over the machine's files
# (there only), then becomes dockerd.
_BIND_REMAP_FILES = """set -e
files=$1; shift
for name in """ + " ".join(REMAP_FILES) + """; do mount --bind "$files/$name" "/etc/$name"; done
exec "$@"
"""


def _write_remap_files(directory: Path, first: int) -> None:
    """The machine's user files plus the remap user, whose subordinate ids start at `first`."""
    directory.mkdir()
    for name in REMAP_FILES:
        machine = Path("/etc") / name
        text = machine.read_text() if machine.exists() else ""
        text = "".join(line + "\n" for line in text.splitlines() if not line.startswith(f"{REMAP_USER}:"))
        entry = {"passwd": f"{REMAP_USER}:x:{first}:{first}::/nonexistent:/usr/sbin/nologin",
                 "group": f"{REMAP_USER}:x:{first}:",
                 "subuid": f"{REMAP_USER}:{first}:{REMAP_SIZE}", "subgid": f"{REMAP_USER}:{first}:{REMAP_SIZE}"}[name]
        (directory / name).write_text(text + entry + "\n")
        (directory / name).chmod(0o644)


def _sshd_config(host: RemoteHost) -> str:
    return f"""ListenAddress {host.address}
Port 22
HostKey {host.root / "ssh_host_ed25519_key"}
PidFile {host.root / "sshd.pid"}
AuthorizedKeysFile {host.root / "authorized_keys"}
AllowUsers {host.user}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
SetEnv DOCKER_HOST=unix://{host.socket}
MaxSessions 64
MaxStartups 64
LogLevel INFO
"""


def _keypair(path: Path) -> tuple[str, str]:
    _run(_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path))
    return path.read_text(), path.with_suffix(".pub").read_text().strip()


def _wait(what: str, process: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool]) -> None:
    """Poll `ready` until true; fail early if the process exited, with the log's last lines."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if ready():
            return
        if process.poll() is not None:
            raise RigError(f"waiting for {what}: it exited with {process.returncode}; last lines of {log}:\n{_tail(log)}")
        time.sleep(POLL)
    raise RigError(f"{what}: not ready within {READY_TIMEOUT:g} s; last lines of {log}:\n{_tail(log)}")


def _tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(errors="replace") if log.exists() else "(no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _remove_containers(host: RemoteHost) -> None:
    try:
        client = host.local_docker()
        try:
            for container in client.containers.list(all=True):
                container.remove(force=True)
        finally:
            client.close()
    except (docker.errors.DockerException, requests.RequestException):
        pass  # stopping dockerd and remove_rig take care of what is left


def _docker_answers(host: RemoteHost) -> bool:
    if not host.socket.exists():
        return False
    client = docker.APIClient(base_url=f"unix://{host.socket}", version="1.41", timeout=2)
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, OSError, requests.RequestException):
        return False
    finally:
        client.close()


def _ssh_banner(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=1) as sock:
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


# -- finding free room and removing rigs, also those of dead test runs --


class _rig_lock:
    """Serializes choosing a subnet and removing abandoned rigs between concurrent test runs."""

    def __enter__(self) -> None:
        self._file = (RIG_ROOT / ".lock").open("w")
        fcntl.flock(self._file, fcntl.LOCK_EX)

    def __exit__(self, *exc_info: object) -> None:
        self._file.close()


def _free_subnet() -> ipaddress.IPv4Network:
    used = [ipaddress.ip_interface(word).network
            for line in _run("ip", "-o", "-4", "addr", "show").stdout.splitlines()
            for before, word in zip(line.split(), line.split()[1:]) if before == "inet"]
    for subnet in SUBNETS.subnets(new_prefix=24):
        if not any(subnet.overlaps(network) for network in used):
            return subnet
    raise RigError(f"no free /24 left in {SUBNETS} for the rig's bridge")


def _owner_stamp(pid: int) -> str:
    """pid and start time: a pid reused by another process does not look like the owner."""
    try:
        started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""
    return f"{pid} {started}"


def remove_abandoned_rigs() -> list[str]:
    """Remove rigs whose test run is gone (killed before it could clean up); their ids."""
    RIG_ROOT.mkdir(parents=True, exist_ok=True)
    with _rig_lock():
        return _remove_abandoned()


def _remove_abandoned() -> list[str]:
    removed = []
    for directory in sorted(RIG_ROOT.iterdir()) if RIG_ROOT.exists() else []:
        owner = directory / "owner"
        if not directory.is_dir():
            continue
        stamp = owner.read_text() if owner.exists() else ""
        pid = stamp.split()[0] if stamp else ""
        if not pid.isdigit() or _owner_stamp(int(pid)) != stamp:
            remove_rig(directory.name)
            removed.append(directory.name)
    return removed


def remove_rig(rig_id: str) -> None:
    """Kill every process of the rig's namespaces with its children (containers included),
    unmount what its dockerds mounted, delete namespaces (their veths go with them), bridge
    and data. Works from names alone, so it also cleans up after a killed test run."""
    prefix = f"af{rig_id}-"
    namespaces = [line.split()[0] for line in _run("ip", "netns", "list").stdout.splitlines()
                  if line.startswith(prefix)]
    _kill_trees([pid for netns in namespaces for pid in _netns_pids(netns)])
    root = RIG_ROOT / rig_id
    for mount in _mounts_under(root):
        _run("umount", "-l", mount, check=False)
    for netns in namespaces:
        _run("ip", "netns", "del", netns, check=False)
    if Path(f"/sys/class/net/afbr{rig_id}").exists():
        _run("ip", "link", "del", f"afbr{rig_id}", check=False)
    shutil.rmtree(root, ignore_errors=True)


def _netns_pids(netns: str) -> list[int]:
    listed = _run("ip", "netns", "pids", netns, check=False).stdout.split()
    return [int(pid) for pid in listed if pid.isdigit()]


def _kill_trees(pids: list[int]) -> None:
    """SIGKILL these processes and all their descendants (a container's processes live in
    their own namespaces but descend from the host's containerd shims)."""
    if not pids:
        return
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    doomed, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in doomed and pid != os.getpid():
            doomed.add(pid)
            todo.extend(children.get(pid, []))
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in doomed) and time.monotonic() < deadline:
        time.sleep(POLL)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent (maybe this process) to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _mounts_under(root: Path) -> list[str]:
    """Mount points at and below root, deepest first."""
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    under = [point for point in points if point == str(root) or point.startswith(f"{root}/")]
    return sorted(set(under), key=lambda point: point.count("/"), reverse=True)


def main(argv: list[str]) -> int:
    """Time starting and removing N hosts (default 2) and check that nothing is left."""
    count = int(argv[0]) if argv else 2
    rig = RemoteHosts(count)
    with rig:
        for host in rig.hosts:
            print(f"{host.name}: {host.url} (engine data {host.data_root})")
    leftovers = [name for name in (rig.root, Path(f"/sys/class/net/{rig.bridge}")) if name.exists()]
    leftovers += [line for line in _run("ip", "netns", "list").stdout.splitlines() if line.startswith(f"af{rig.id}-")]
    print(f"{count} hosts: made in {rig.timings['made']:.2f} s, ready in {rig.timings['started']:.2f} s, "
          f"removed in {rig.timings['removed']:.2f} s; left behind: {leftovers or 'nothing'}")
    return 1 if leftovers else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
