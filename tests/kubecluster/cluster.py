"""A real single-node Kubernetes cluster that starts and stops with the tests.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet and
kube-proxy (built by scripts/setup, scripts/lib/kubernetes.sh) run as child processes with
fresh certificates, on a bridge this module creates. The node's daemons run in a private mount
namespace where
- the sysctls kubelet insists on read as the values it wants (files mounted over /proc/sys
  entries), so with `protectKernelDefaults` it neither fails nor changes the host's;
- the directories a node writes to by fixed paths (/var/log, /var/lib/cni, /var/lib/kubelet,
  /run/netns, /run/containerd, and /tmp/hostpath_pv, where the controller-manager's host-path
  provisioner makes the volumes claims ask for) are directories of the cluster,
so every mount dies with the namespace. `stop` kills what runs in pods (by cgroup), the
daemons, then removes kube-proxy's nft tables, kubelet's cgroups and the bridge.

One cluster per machine at a time (kube-proxy's nft table and kubelet's `kubepods` cgroups have
fixed names): a lock next to the binaries says so at once instead of two clusters mixing.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.kubecluster import configs
from tests.kubecluster.layout import NODE_NAME, Layout, Network, kubernetes_home
from tests.kubecluster.pki import CLIENTS, Identity, Pki
from tests.shared_paths import SHARED_PATHS

# What kubelet checks with protectKernelDefaults, and what the CNI bridge plugin sets.
WANTED_SYSCTLS = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
                  "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
                  "kernel/keys/root_maxbytes": "25000000", "net/ipv4/ip_forward": "1"}
# /tmp/hostpath_pv: where the controller-manager's host-path provisioner makes volumes;
# /var/lib/kubelet: kubelet's device-plugin socket goes to /var/lib/kubelet/device-plugins whatever
# --root-dir says (on a host without that directory it appeared there).
SHADOWED = ("/var/log", "/var/lib/cni", "/var/lib/kubelet", "/run/netns", "/run/containerd", "/tmp/hostpath_pv")
CGROUP_ROOT = Path("/sys/fs/cgroup")
POLL = 0.2


class ClusterError(RuntimeError):
    """The cluster did not come up (or down); the message names the part and its log."""


def missing_binaries(home: Path) -> list[str]:
    names = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"]
    return [name for name in names if not (home / "bin" / name).exists()] + \
        ([] if (home / "pause.tar").exists() else ["pause.tar"])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Cluster:
    """One cluster under `root`; `image` (a Docker image tag) is imported into its containerd."""

    root: Path
    image: str | None = None
    home: Path = field(default_factory=kubernetes_home)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layout = Layout(self.root)
        self.network: Network | None = None
        self._holder: subprocess.Popen[bytes] | None = None
        self._processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._lock: int | None = None

    # -- what tests use -------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.layout.admin_kubeconfig

    @property
    def node_ip(self) -> str:
        assert self.network is not None, "the cluster is not started"
        return self.network.node_ip

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        completed = subprocess.run([str(self.home / "bin" / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
                                   input=stdin, capture_output=True, text=True, timeout=60)
        if check and completed.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {completed.stderr.strip()}")
        return completed.stdout

    def images(self) -> list[str]:
        """The image references in containerd's k8s.io namespace (what pods can run)."""
        return subprocess.run(self._ctr("images", "ls", "-q"), capture_output=True, text=True,
                              check=True).stdout.split()

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- bring-up -------------------------------------------------------------------------

    def start(self) -> None:
        missing = missing_binaries(self.home)
        if missing:
            raise ClusterError(f"missing {', '.join(missing)} in {self.home}: run scripts/setup "
                               "(ensure_kubernetes builds them)")
        started = time.monotonic()
        self._take_lock()
        self.root.mkdir(parents=True, exist_ok=True)
        self.layout.logs.mkdir(exist_ok=True)
        routes = subprocess.run(["ip", "-o", "-4", "route"], capture_output=True, text=True, check=True).stdout
        self.network = Network.pick(routes, bridge=f"afk-{uuid.uuid4().hex[:8]}")
        self._bridge_up()
        self._write_files()
        self._enter_namespace()
        bin_ = self.home / "bin"
        etcd = self._spawn("etcd", [str(bin_ / "etcd"), *configs.etcd_args(self.network, self.layout)])
        containerd = self._spawn("containerd", ["containerd", "--config", str(self.root / "containerd.toml")])
        self._wait("etcd", etcd, self._etcd_healthy, 60)
        apiserver = self._spawn("kube-apiserver", [str(bin_ / "kube-apiserver"),
                                                   *configs.apiserver_args(self.network, self.layout)])
        self._wait("containerd", containerd, self._containerd_answers, 60)
        self._import_file(self.home / "pause.tar")
        importer = _Background(self._import_image) if self.image else None
        self._wait("kube-apiserver", apiserver, lambda: self._kubectl_ok("get", "--raw", "/readyz"), 120)
        self.timings["apiserver_ready_s"] = time.monotonic() - started
        self._spawn("kube-controller-manager", [str(bin_ / "kube-controller-manager"),
                                                *configs.controller_manager_args(self.network, self.layout)])
        self._spawn("kube-scheduler", [str(bin_ / "kube-scheduler"), *configs.scheduler_args(self.layout)])
        if importer:
            # Imported before kubelet starts, the image is in the node's first list of its images
            # (refreshed every 30 s after), which the preflight reads for `image_pull_policy: Never`.
            importer.join()
        kubelet = self._spawn("kubelet", [str(bin_ / "kubelet"), *configs.kubelet_args(self.network, self.layout)])
        proxy = self._spawn("kube-proxy", [str(bin_ / "kube-proxy"), "--config", str(self.root / "kube-proxy.yaml")])
        self._wait("kubelet (node Ready)", kubelet, self._node_ready, 120)
        self._wait("kube-proxy (its nft table)", proxy,
                   lambda: subprocess.run(["nft", "list", "table", "ip", "kube-proxy"],
                                          capture_output=True).returncode == 0, 60)
        self._wait("kube-controller-manager (the default service account)", self._process("kube-controller-manager"),
                   lambda: self._kubectl_ok("get", "serviceaccount", "default"), 60)
        if self.image:
            self._wait("kubelet (the node lists the agent image)", kubelet, self._node_lists_image, 60)
        self.timings["start_s"] = time.monotonic() - started

    def _take_lock(self) -> None:
        path = self.home.parent / "cluster.lock"
        self._lock = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._lock, 64, 0).decode(errors="replace").strip()
            os.close(self._lock)
            self._lock = None
            raise ClusterError(f"another test cluster runs on this machine (process {holder or '?'}, lock {path}); "
                               "stop it first: one cluster per machine at a time") from None
        os.ftruncate(self._lock, 0)
        os.pwrite(self._lock, f"{os.getpid()}\n".encode(), 0)

    def _bridge_up(self) -> None:
        assert self.network is not None
        for argv in (["ip", "link", "add", self.network.bridge, "type", "bridge"],
                     ["ip", "addr", "add", self.network.node_cidr, "dev", self.network.bridge],
                     ["ip", "link", "set", self.network.bridge, "up"]):
            subprocess.run(argv, check=True, capture_output=True)

    def _write_files(self) -> None:
        network, layout = self.network, self.layout
        assert network is not None
        pki = Pki(layout.pki)
        pki.issue("apiserver", "kube-apiserver",
                  dns=("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       f"kubernetes.default.svc.{configs.CLUSTER_DOMAIN}", "localhost"),
                  ips=(network.node_ip, network.service_ip, "127.0.0.1"))
        pki.issue("kubelet", NODE_NAME, dns=(NODE_NAME,), ips=(network.node_ip,))
        for identity in CLIENTS:
            path = layout.admin_kubeconfig if identity.file == "admin" else layout.kubeconfig(identity.file)
            pki.kubeconfig(path, identity, network.api_server)
        pki.kubeconfig(layout.kubeconfig("kubelet"),
                       Identity("kubelet-client", f"system:node:{NODE_NAME}", ("system:nodes",)), network.api_server)
        layout.cni_conf.mkdir(parents=True)
        (layout.cni_conf / "10-agentfleet.conflist").write_text(configs.cni_conflist(network, layout))
        (self.root / "containerd.toml").write_text(configs.containerd_toml(layout))
        (self.root / "kubelet.yaml").write_text(configs.kubelet_config(network, layout))
        (self.root / "kube-proxy.yaml").write_text(configs.kube_proxy_config(network, layout))

    def _enter_namespace(self) -> None:
        """Start the holder of the node's mount namespace, with its mounts in place."""
        shadow = self.layout.shadow
        script = ["set -e"]
        for key, wanted in WANTED_SYSCTLS.items():
            if Path("/proc/sys", key).read_text().strip() != wanted:
                fake = shadow / "sysctl" / key.replace("/", ".")
                fake.parent.mkdir(parents=True, exist_ok=True)
                fake.write_text(wanted + "\n")
                script.append(f"mount --bind {shlex.quote(str(fake))} /proc/sys/{key}")
        for host_path in map(Path, SHADOWED):
            # Other parts of the run use these too (the remote-host rig's `ip netns add` mounts
            # /run/netns): what the cluster makes here is undone when both are done with it.
            with SHARED_PATHS.changing(self, host_path):
                host_path.mkdir(exist_ok=True)
            own = shadow / host_path.relative_to("/")
            own.mkdir(parents=True, exist_ok=True)
            script.append(f"mount --bind {shlex.quote(str(own))} {host_path}")
        ready = self.root / "namespace-ready"
        script += [f"touch {shlex.quote(str(ready))}", "exec sleep infinity"]
        log = (self.layout.logs / "namespace.log").open("wb")
        self._holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script)],
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait("the node's mount namespace", self._holder, ready.exists, 10, log=self.layout.logs / "namespace.log")

    def _in_namespace(self, argv: list[str]) -> list[str]:
        assert self._holder is not None
        return ["nsenter", f"--target={self._holder.pid}", "--mount", "--", *argv]

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.layout.logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(self._in_namespace(argv), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self._processes.append((name, process))
        return process

    def _process(self, name: str) -> subprocess.Popen[bytes]:
        return next(process for known, process in self._processes if known == name)

    def _wait(self, what: str, process: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float,
              log: Path | None = None) -> None:
        log = log or self.layout.logs / f"{what.split()[0]}.log"
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                raise ClusterError(f"{what} exited with {process.returncode}; the end of {log}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{what} was not ready within {timeout:g} s; the end of {log}:\n{_tail(log)}")
            time.sleep(POLL)

    def _etcd_healthy(self) -> bool:
        assert self.network is not None
        try:
            with urllib.request.urlopen(f"{self.network.etcd_client}/health", timeout=2) as response:
                return b'"health":"true"' in response.read()
        except OSError:
            return False

    def _ctr(self, *args: str) -> list[str]:
        return self._in_namespace(["ctr", "--address", str(self.layout.containerd_socket), "--namespace", "k8s.io",
                                   *args])

    def _containerd_answers(self) -> bool:
        return subprocess.run(self._ctr("version"), capture_output=True).returncode == 0

    def _kubectl_ok(self, *args: str) -> bool:
        return subprocess.run([str(self.home / "bin" / "kubectl"), "--kubeconfig", str(self.kubeconfig),
                               "--request-timeout", "5s", *args], capture_output=True).returncode == 0

    def _node_ready(self) -> bool:
        status = subprocess.run([str(self.home / "bin" / "kubectl"), "--kubeconfig", str(self.kubeconfig), "get",
                                 "node", NODE_NAME, "-o",
                                 "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
                                capture_output=True, text=True)
        return status.stdout.strip() == "True"

    def _node_lists_image(self) -> bool:
        listed = subprocess.run([str(self.home / "bin" / "kubectl"), "--kubeconfig", str(self.kubeconfig), "get",
                                 "node", NODE_NAME, "-o", "jsonpath={.status.images[*].names[*]}"],
                                capture_output=True, text=True)
        return any(name.endswith("/" + str(self.image)) for name in listed.stdout.split())

    def _import_file(self, archive: Path) -> None:
        completed = subprocess.run(self._ctr("images", "import", str(archive)), capture_output=True, text=True)
        if completed.returncode != 0:
            raise ClusterError(f"ctr images import {archive} failed: {completed.stderr.strip()}")

    def _import_image(self) -> None:
        """`docker save` of the image, piped into containerd's k8s.io namespace."""
        assert self.image is not None
        started = time.monotonic()
        save = subprocess.Popen(["docker", "save", self.image], stdout=subprocess.PIPE)
        assert save.stdout is not None
        completed = subprocess.run(self._ctr("images", "import", "-"), stdin=save.stdout, capture_output=True,
                                   text=True)
        save.stdout.close()
        if save.wait() != 0 or completed.returncode != 0:
            raise ClusterError(f"importing {self.image} into the cluster failed: {completed.stderr.strip()}")
        self.timings["image_import_s"] = time.monotonic() - started

    # -- teardown -------------------------------------------------------------------------

    def stop(self) -> None:
        """Everything `start` made goes, whatever point it reached; safe to call twice."""
        started = time.monotonic()
        for name in ("kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            for known, process in self._processes:
                if known == name:
                    _terminate(process)
        _kill_pods()
        for _, process in self._processes:
            _terminate(process)
        if self._holder is not None:
            namespace = _mount_namespace(self._holder.pid)
            for pid in _pids_in_namespace(namespace):
                if pid != self._holder.pid:
                    _kill(pid)
            _terminate(self._holder)
        self._processes.clear()
        self._holder = None
        for family in ("ip", "ip6"):
            subprocess.run(["nft", "delete", "table", family, "kube-proxy"], capture_output=True)
        _remove_cgroups("kubepods")
        if self.network is not None:
            subprocess.run(["ip", "link", "del", self.network.bridge], capture_output=True)
        SHARED_PATHS.release(self)
        if self._lock is not None:
            os.close(self._lock)  # releases the lock
            self._lock = None
        self.timings["stop_s"] = time.monotonic() - started


class _Background(threading.Thread):
    """A call in a thread whose exception `join` raises."""

    def __init__(self, call: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self._call = call
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._call()
        except BaseException as error:  # handed to join
            self._error = error

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self._error is not None:
            raise self._error


def _terminate(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _mount_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _pids_in_namespace(namespace: str | None) -> list[int]:
    """Processes in the node's mount namespace; none when it is unknown or is the host's own (a
    holder that never got to unshare), so nothing of the host is ever killed."""
    if namespace is None or namespace == _mount_namespace(os.getpid()):
        return []
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _mount_namespace(int(p)) == namespace]


def _pod_pids() -> list[int]:
    """Processes in kubelet's pod cgroups (containers have mount namespaces of their own)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if ":/kubepods" in Path(f"/proc/{entry}/cgroup").read_text():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _kill_pods(timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (pids := _pod_pids()) and time.monotonic() < deadline:
        for pid in pids:
            _kill(pid)
        time.sleep(POLL)


def _remove_cgroups(name: str) -> None:
    """rmdir `name` and its children in every cgroup hierarchy, deepest first."""
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / name
        if not top.is_dir():
            continue
        for directory, _, _ in sorted(os.walk(top), key=lambda entry: -entry[0].count("/")):
            deadline = time.monotonic() + 5
            while True:
                try:
                    os.rmdir(directory)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(POLL)


def remove_tree(root: Path) -> None:
    """The cluster's directory, once nothing is mounted in it any more."""
    shutil.rmtree(root, ignore_errors=True)
