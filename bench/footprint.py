"""Footprint: idle memory per agent, and disk per agent on a repository of realistic size.

The repository is generated here (git fast-import, deterministic): thousands of commits over
about a thousand source-like text files, served by the benchmark's git server. Disk per agent,
three ways:

- `full clone`: each agent's first boot clones the whole history into its workspace volume;
- `shared objects`: the fleet has `shared_objects: true`; each agent borrows the objects of one
  read-only mirror volume (the mirror, once per fleet, is reported on its own line);
- `git worktree`: one clone on this host and a worktree per agent (the clone, once, is reported
  on its own line).

Per-agent figures are allocated bytes (`du`) of the workspace volume (or the worktree directory
plus its entry under .git/worktrees). Idle memory is the agent container's cgroup memory
(usage minus inactive file cache, as `docker stats` shows it; and RSS) a few seconds after the
fleet is up.
"""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import Workbench, load, median, stack_endpoints, wait_until_answers
from tests.e2e.support import docker

SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "se", "di", "po", "an", "el", "or", "us")
SETTLE_S = 5


def word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4)))


def line(rng: random.Random) -> str:
    return "    " * rng.randint(0, 3) + " ".join(word(rng) for _ in range(rng.randint(2, 9)))


def file_names(files: int) -> list[str]:
    """The paths of a generated repository's files, spread over 40 directories."""
    return [f"src/module{i % 40:02d}/file{i:04d}.txt" for i in range(files)]


def generate(path: Path, commits: int, files: int, seed: int = 7) -> None:
    """A repository with `commits` commits over `files` files (60-240 lines each); each commit
    edits a few lines of three files (as changes to code do), so the history deltas and
    compresses like a real one."""
    rng = random.Random(seed)
    names = file_names(files)
    contents = {name: [line(rng) for _ in range(rng.randint(60, 240))] for name in names}
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    importer = subprocess.Popen(["git", "-C", str(path), "fast-import", "--quiet"], stdin=subprocess.PIPE)
    assert importer.stdin is not None
    out = importer.stdin

    def blob(text: str) -> None:
        data = text.encode()
        out.write(b"data %d\n" % len(data) + data + b"\n")

    for number in range(1, commits + 1):
        changed = names if number == 1 else rng.sample(names, 3)
        out.write(b"commit refs/heads/main\n")
        out.write(b"committer Dev <dev@example.com> %d +0000\n" % (1_600_000_000 + number * 3600))
        blob(f"change {number}")  # the commit message; each commit continues the branch
        for name in changed:
            lines = contents[name]
            for _ in range(rng.randint(1, 6)):
                lines[rng.randrange(len(lines))] = line(rng)
            if rng.random() < 0.3:
                lines.insert(rng.randrange(len(lines)), line(rng))
            out.write(f"M 100644 inline {name}\n".encode())
            blob("\n".join(lines) + "\n")
    out.close()
    if importer.wait() != 0:
        raise RuntimeError("git fast-import failed")
    subprocess.run(["git", "-C", str(path), "gc", "--quiet"], check=True)


def du(path: str | Path) -> int:
    """Allocated bytes under path."""
    return int(subprocess.run(["du", "-s", "--block-size=1", str(path)], check=True,
                              capture_output=True, text=True).stdout.split()[0])


def volume_bytes(volume: str) -> int:
    return du(docker("volume", "inspect", "-f", "{{.Mountpoint}}", volume))


def memory(container: str) -> tuple[int, int]:
    """(usage minus inactive file cache, RSS) of a container's cgroup (v1 or v2), in bytes."""
    cid = docker("inspect", "-f", "{{.Id}}", container)
    for base in (Path(f"/sys/fs/cgroup/memory/docker/{cid}"), Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope")):
        if base.exists():
            stat = dict(l.split() for l in (base / "memory.stat").read_text().splitlines())
            if (base / "memory.usage_in_bytes").exists():  # cgroup v1
                usage = int((base / "memory.usage_in_bytes").read_text())
                return usage - int(stat.get("total_inactive_file", 0)), int(stat["total_rss"])
            usage = int((base / "memory.current").read_text())
            return usage - int(stat.get("inactive_file", 0)), int(stat["anon"])
    raise RuntimeError(f"no cgroup memory files for container {container}")


def fleet_footprint(bench: Workbench, agents: int, remote: str, shared: bool) -> dict[str, Any]:
    fields = {"shared_objects": True} if shared else {}
    stack, _ = bench.up("foot", bench.fleet(agents, remote=remote, **fields))
    try:
        outputs = stack.outputs()
        wait_until_answers(stack_endpoints(bench, outputs, stack.name), 120)
        time.sleep(SETTLE_S)
        names = list(outputs["agents"])
        memories = [memory(f"agentfleet-{stack.name}-{name}") for name in names]
        disks = [volume_bytes(f"agentfleet-{stack.name}-{name}-workspace") for name in names]
        mirror = volume_bytes(f"agentfleet-{stack.name}-shared-objects") if shared else 0
        return {"memory": [m[0] for m in memories], "rss": [m[1] for m in memories],
                "disk": disks, "shared": mirror}
    finally:
        bench.discard_stack(stack)


def worktrees(bench: Workbench, bare: Path, agents: int) -> dict[str, Any]:
    main = bench.scratch / "worktrees" / "main"
    subprocess.run(["git", "clone", "-q", "--no-local", str(bare), str(main)], check=True)
    disks = []
    for i in range(1, agents + 1):
        tree = main.parent / f"agent-{i}"
        subprocess.run(["git", "-C", str(main), "worktree", "add", "-q", "-b", f"agent/agent-{i}", str(tree)],
                       check=True)
        disks.append(du(tree) + du(main / ".git" / "worktrees" / f"agent-{i}"))
    shared = du(main) - sum(du(main / ".git" / "worktrees" / f"agent-{i}") for i in range(1, agents + 1))
    return {"disk": disks, "shared": shared, "checkout": du(main) - du(main / ".git")}


def serve_generated(bench: Workbench, commits: int, files: int, name: str = "generated") -> tuple[str, Path, float]:
    """A generated repository served by the workbench's git server as /srv/git/<name>.git:
    its URL there, its bare copy here, and the seconds generating it took."""
    assert bench.git is not None
    source, bare = bench.scratch / name, bench.scratch / f"{name}.git"
    started = time.perf_counter()
    generate(source, commits, files)
    subprocess.run(["git", "clone", "-q", "--bare", "--no-local", str(source), str(bare)], check=True)
    generate_s = time.perf_counter() - started
    docker("cp", str(bare), f"{bench.git.name}:/srv/git/{name}.git")
    docker("exec", bench.git.name, "chown", "-R", "git:git", f"/srv/git/{name}.git")
    return bench.git.url.replace("/srv/git/app.git", f"/srv/git/{name}.git"), bare, generate_s


def run(bench: Workbench, agents: int, commits: int, files: int) -> dict[str, Any]:
    remote, bare, generate_s = serve_generated(bench, commits, files)
    loads = [load()]
    full = fleet_footprint(bench, agents, remote, shared=False)
    loads.append(load())
    shared = fleet_footprint(bench, agents, remote, shared=True)
    trees = worktrees(bench, bare, agents)
    worktree_mib = median(trees["disk"]) / 2**20

    def row(way: str, per_agent: list[int], once: int) -> dict[str, Any]:
        mib = median(per_agent) / 2**20
        return {"way": way, "per_agent_mib": round(mib, 1), "ratio_to_worktree": round(mib / worktree_mib, 2),
                "shared_once_mib": round(once / 2**20, 1),
                f"total_{agents}_agents_mib": round((sum(per_agent) + once) / 2**20, 1)}

    return {
        "benchmark": "footprint", "agents": agents, "load_1min_median": round(median(loads), 2),
        "repository": {"commits": commits, "files": files, "checkout_mib": round(trees["checkout"] / 2**20, 1),
                       "packed_history_mib": round(du(bare / "objects") / 2**20, 1), "generate_s": round(generate_s, 1)},
        "idle_memory_mib": {"median": round(median(full["memory"] + shared["memory"]) / 2**20, 1),
                            "max": round(max(full["memory"] + shared["memory"]) / 2**20, 1),
                            "rss_median": round(median(full["rss"] + shared["rss"]) / 2**20, 1)},
        "results": [row("full clone", full["disk"], 0), row("shared objects", shared["disk"], shared["shared"]),
                    row("git worktree (host)", trees["disk"], trees["shared"])],
    }
