"""Overlaps (issue 26): `agentfleet overlaps` on a fleet with real changes, against the same
answer got by hand with plain git over plain ssh, and how both grow with agents and files.

For each repository size (files, generated as the footprint benchmark generates them and served
by the workbench's git server) one fleet of the largest size comes up and clones it; every agent
then commits edits from `plan`: three files of its own, and one file it shares with its partner
(a-1 with a-2, a-3 with a-4, ...), where every other pair rewrites the same line (a conflict)
and the rest lines far apart (an overlap that merges cleanly). Each fleet size is the first N
agents, given to the CLI as an outputs file of those agents. Two ways, interleaved round by round:

- `agentfleet overlaps --json`: a new process, as a user runs it (reads each agent's work over
  SSH, 8 at a time, and merges on this machine, see agentfleet/fleet.py);
- `plain git over ssh`: what an operator scripts without agentfleet, through the files
  `agentfleet ssh-config` writes: a bare repository here, the base fetched from the git server,
  every agent's HEAD fetched from its workspace (`git fetch a-1:workspace`, 8 at a time), then
  `git diff --name-only` per agent and `git merge-tree --write-tree` per pair and per agent
  against the base, as overlaps does.

Both answers are checked against the plan (the files two agents change, the pairs that
conflict), so a fast wrong answer fails the run. The work is committed: the plain-git way cannot
see uncommitted changes, which overlaps also reads (it stages them into a scratch index).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from agentfleet import Fleet
from agentfleet.parallel import for_each
from agentfleet.sshconfig import SshFiles, write_ssh_files
from bench.common import SSH_OPTIONS, Workbench, aim, load, median, seconds, stack_endpoints, timed, wait_until_answers
from bench.footprint import file_names, serve_generated

LAUNCHER = Path(__file__).resolve().parents[1] / "scripts" / "bin" / "agentfleet"
WAYS = ("agentfleet overlaps", "plain git over ssh")
AIM = 1.5  # agentfleet overlaps against the plain-git way, at the largest fleet and repository
PARALLEL = 8  # overlaps' default; the plain-git way fetches as many at once
OWN_FILES = 3
SHARED_LINE, CLEAN_LINE = 10, 40  # every generated file has at least 60 lines
BASE = "main"


@dataclass(frozen=True)
class Edit:
    """Line `line` (1-based) of `path` becomes `text`."""

    path: str
    line: int
    text: str


def agent_name(number: int) -> str:
    return f"a-{number}"  # as Workbench.fleet names them


def plan(agents: int, files: int) -> dict[str, tuple[Edit, ...]]:
    """Each agent's edits: OWN_FILES files no one else touches, and the file of its pair (a-1 and
    a-2 share one, a-3 and a-4 the next, ...); the pairs' second agents rewrite the same line as
    the first in every other pair (a conflict) and a line far from it in the rest."""
    names = file_names(files)
    shared = (agents + 1) // 2
    needed = shared + agents * OWN_FILES
    if needed > files:
        raise ValueError(f"overlaps bench: {agents} agents need {needed} files, the repository has {files}")
    edits: dict[str, tuple[Edit, ...]] = {}
    for number in range(1, agents + 1):
        agent = agent_name(number)
        pair, second = divmod(number - 1, 2)
        line = CLEAN_LINE if second and pair % 2 else SHARED_LINE
        own = [names[shared + (number - 1) * OWN_FILES + i] for i in range(OWN_FILES)]
        edits[agent] = (Edit(names[pair], line, f"edited by {agent}"),
                        *(Edit(path, SHARED_LINE, f"edited by {agent}") for path in own))
    return edits


def expected(edits: Mapping[str, Sequence[Edit]], agents: Iterable[str]) -> tuple[set[str], set[frozenset[str]]]:
    """What overlaps must say of these agents' edits: the paths two or more of them change, and
    the pairs that rewrite the same line of one file."""
    chosen = list(agents)
    changers: dict[str, set[str]] = {}
    for agent in chosen:
        for edit in edits[agent]:
            changers.setdefault(edit.path, set()).add(agent)
    conflicts = {frozenset((one, other)) for one, other in combinations(chosen, 2)
                 if {(e.path, e.line) for e in edits[one]} & {(e.path, e.line) for e in edits[other]}}
    return {path for path, who in changers.items() if len(who) > 1}, conflicts


def edit_script(agent: str, edits: Sequence[Edit]) -> str:
    """The shell commands that make and commit the agent's edits in its workspace."""
    lines = [f"sed -i {shlex.quote(f'{edit.line}s/.*/{edit.text}/')} {shlex.quote(edit.path)}" for edit in edits]
    return " && ".join([*lines, f"git commit -qam {shlex.quote(f'work of {agent}')}"])


def answer_of_overlaps(report: Mapping[str, Any]) -> tuple[set[str], set[frozenset[str]]]:
    """The files and conflicting pairs in `agentfleet overlaps --json` output."""
    return ({file["path"] for file in report["files"]},
            {frozenset(pair["agents"]) for pair in report["pairs"] if not pair["clean"]})


def subset_outputs(outputs: Mapping[str, Any], agents: Sequence[str]) -> dict[str, Any]:
    """The stack's outputs with only these agents (and their keys): a smaller fleet for the CLI."""
    return {**outputs, "agents": {name: outputs["agents"][name] for name in agents},
            "agent_private_keys": {name: outputs["agent_private_keys"][name] for name in agents}}


@dataclass(frozen=True)
class PlainGit:
    """The plain-git way: OpenSSH with agentfleet's ssh-config files, git, a scratch repository."""

    ssh_files: SshFiles
    base_url: str
    base_ssh: str  # GIT_SSH_COMMAND for the git server (the deploy key)
    scratch: Path

    def run(self, agents: Sequence[str]) -> tuple[set[str], set[frozenset[str]]]:
        with tempfile.TemporaryDirectory(dir=self.scratch, prefix="plain-git-") as repo:
            self.git(repo, "init", "-q", "--bare")
            self.git(repo, "fetch", "-q", "--no-write-fetch-head", self.base_url, f"+refs/heads/{BASE}:refs/base",
                     ssh=self.base_ssh)

            def fetch(agent: str) -> None:
                self.git(repo, "fetch", "-q", "--no-write-fetch-head", f"{agent}:workspace",
                         f"+HEAD:refs/agents/{agent}", ssh=f"ssh -F {shlex.quote(str(self.ssh_files.config))}")

            with ThreadPoolExecutor(max_workers=min(PARALLEL, len(agents))) as pool:
                list(pool.map(fetch, agents))
            changers: dict[str, set[str]] = {}
            for agent in agents:
                for path in self.git(repo, "diff", "--name-only", "-z", f"refs/base...refs/agents/{agent}").split("\0"):
                    if path:
                        changers.setdefault(path, set()).add(agent)
            for agent in agents:
                if not self.merges(repo, "refs/base", f"refs/agents/{agent}"):
                    raise RuntimeError(f"plain git: {agent}'s work does not merge into the base")
            conflicts = {frozenset((one, other)) for one, other in combinations(agents, 2)
                         if not self.merges(repo, f"refs/agents/{one}", f"refs/agents/{other}")}
        return {path for path, who in changers.items() if len(who) > 1}, conflicts

    def merges(self, repo: str, ours: str, theirs: str) -> bool:
        done = subprocess.run(["git", "-C", repo, "merge-tree", "--write-tree", "--name-only", "--no-messages",
                               ours, theirs], capture_output=True, env=git_env())
        if done.returncode not in (0, 1):
            raise RuntimeError(f"plain git: merge-tree {ours} {theirs}: {done.stderr.decode().strip()}")
        return done.returncode == 0

    @staticmethod
    def git(repo: str, *args: str, ssh: str | None = None) -> str:
        env = git_env() if ssh is None else {**git_env(), "GIT_SSH_COMMAND": ssh}
        return subprocess.run(["git", "-C", repo, "-c", "gc.auto=0", *args], check=True, capture_output=True,
                              text=True, env=env).stdout


def git_env() -> dict[str, str]:
    """git without this machine's configuration, as agentfleet's scratch repository runs it."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull, "HOME": os.environ.get("HOME", "/")}


def via_cli(outputs_file: Path) -> dict[str, Any]:
    """`agentfleet --outputs FILE overlaps --json` in a new process; exits 1 on a predicted conflict."""
    done = subprocess.run([str(LAUNCHER), "--outputs", str(outputs_file), "overlaps", "--json"],
                          capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise RuntimeError(f"agentfleet overlaps failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    report = json.loads(done.stdout)
    if report["unread"]:
        raise RuntimeError(f"agentfleet overlaps could not read: {report['unread']}")
    return report


def one_repository(bench: Workbench, files: int, commits: int, sizes: list[int], rounds: int) -> list[dict[str, Any]]:
    """One fleet of max(sizes) agents on a generated repository of `files` files: both ways,
    `rounds` times each, for each size."""
    assert bench.git is not None
    remote, _, generate_s = serve_generated(bench, commits, files, name=f"overlaps-{files}")
    agents = max(sizes)
    edits = plan(agents, files)
    stack, up_s = bench.up("overlaps", bench.fleet(agents, remote=remote))
    try:
        outputs = stack.outputs()
        wait_until_answers(stack_endpoints(bench, outputs, stack.name), 300)
        fleet = Fleet.from_outputs(outputs, stack.name)
        with fleet:
            done = for_each(fleet.names, lambda name: fleet.agent(name).run(edit_script(name, edits[name]),
                                                                            timeout=120), PARALLEL)
        failed = {name: str(result) if isinstance(result, Exception) else result.stderr.strip()
                  for name, result in done.items() if isinstance(result, Exception) or not result.ok}
        if failed:
            raise RuntimeError(f"overlaps bench: the edits failed in {failed}")
        ssh_files = SshFiles(bench.scratch / stack.name / "ssh")
        write_ssh_files(fleet.agents.values(), ssh_files, stack.name)
        known = bench.write_file(f"{stack.name}/git-server.known_hosts", bench.git.known_hosts_line + "\n")
        base_ssh = " ".join(["ssh", *SSH_OPTIONS, "-i", str(bench.deploy_key_file), "-o", f"UserKnownHostsFile={known}"])
        plain = PlainGit(ssh_files, remote, base_ssh, bench.scratch)
        rows = []
        for size in sorted(sizes):
            chosen = [agent_name(number) for number in range(1, size + 1)]
            outputs_file = bench.write_file(f"{stack.name}/outputs-{size}.json", json.dumps(subset_outputs(outputs, chosen)))
            want = expected(edits, chosen)
            ways = {WAYS[0]: lambda file=outputs_file: answer_of_overlaps(via_cli(file)),
                    WAYS[1]: lambda agents=chosen: plain.run(agents)}
            samples: dict[str, list[float]] = {way: [] for way in WAYS}
            load_before = load()
            for round_number in range(rounds):
                # Each way goes first in every other round: a warm page cache favours neither.
                for way in WAYS if round_number % 2 == 0 else WAYS[::-1]:
                    took, answer = timed(ways[way])
                    if answer != want:
                        raise RuntimeError(f"{way} on {size} agents said {answer}, the plan says {want}")
                    samples[way].append(took)
            baseline = median(samples[WAYS[1]])
            for way, values in samples.items():
                rows.append({"files": files, "agents": size, "pairs": size * (size - 1) // 2, "way": way,
                             "median_s": seconds(median(values)), "min_s": seconds(min(values)),
                             "max_s": seconds(max(values)), "ratio_to_plain_git": round(median(values) / baseline, 2),
                             "load_1min_before": load_before})
            print(f"  overlaps {files} files, {size} agents: "
                  + ", ".join(f"{way} {median(values):.2f} s" for way, values in samples.items()), flush=True)
        rows[-1]["up_s"], rows[-1]["generate_s"] = seconds(up_s), seconds(generate_s)
        return rows
    finally:
        bench.discard_stack(stack)


def run(bench: Workbench, sizes: list[int], files: list[int], commits: int, rounds: int) -> dict[str, Any]:
    rows = [row for count in sorted(files) for row in one_repository(bench, count, commits, sizes, rounds)]
    return {"benchmark": "overlaps", "commits": commits, "rounds": rounds, "results": rows,
            "aims": aims(rows, sizes, files, commits, rounds)}


def command(sizes: list[int], files: list[int], commits: int, rounds: int) -> str:
    return (f"python -m bench --only overlaps --overlaps-agents {','.join(map(str, sorted(sizes)))} "
            f"--overlaps-files {','.join(map(str, sorted(files)))} --overlaps-commits {commits} "
            f"--overlaps-rounds {rounds}")


def aims(rows: list[dict[str, Any]], sizes: list[int], files: list[int], commits: int, rounds: int) -> list[dict[str, Any]]:
    """agentfleet overlaps against plain git at the largest fleet on the largest repository."""
    agents, count = max(sizes), max(files)
    at = {row["way"]: row for row in rows if row["agents"] == agents and row["files"] == count}
    ours, theirs = at[WAYS[0]]["median_s"], at[WAYS[1]]["median_s"]
    return [aim(f"`agentfleet overlaps`, {agents} agents, {count} files: against plain git over ssh",
                ours / theirs, AIM, "x", command(sizes, files, commits, rounds),
                f"{ours:.2f} s / {theirs:.2f} s, median of {rounds}")]
