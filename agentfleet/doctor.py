"""`agentfleet doctor`: is each agent usable, and if not, what to do about it.

Every check is a command to run on the agent plus a pure function judging its Result, so the
judging is tested from recorded outputs without a machine. Checks run in order; when the agent
cannot be reached the others are skipped rather than failed a second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agentfleet.connection import Connection
from agentfleet.endpoint import AgentEndpoint, Identity
from agentfleet.errors import (
    AgentfleetError,
    AuthenticationFailed,
    CommandTimeout,
    HostKeyMismatch,
    Unreachable,
)
from agentfleet.result import Result, head, tail
from agentfleet.workspace import NEUTRAL_DIR, empty_workspace_hint, repository_command

CHECK_TIMEOUT = 30.0

CLOUD_INIT_STATUS = ["cloud-init", "status"]
CLOUD_INIT_STATUS_LONG = ["cloud-init", "status", "--long"]
GIT_IDENTITY = ["git", "config", "--global", "--get-regexp", r"^user\.(name|email)$"]
NO_PROMPT = ["env", "GIT_TERMINAL_PROMPT=0"]  # a missing https credential fails, never waits


class Verdict(StrEnum):
    OK = "ok"
    FAIL = "FAIL"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One check's outcome; hint says what to do when it failed."""

    name: str
    verdict: Verdict
    detail: str
    hint: str = ""


@dataclass(frozen=True)
class Diagnosis:
    agent: AgentEndpoint
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.verdict is not Verdict.FAIL for check in self.checks)


def diagnose(connection: Connection) -> Diagnosis:
    """Run every check on one agent, in order."""
    endpoint = connection.endpoint
    reachable = check_reachable(connection)
    isolation = judge_user_namespace(endpoint)  # from the outputs: known whether the agent answers or not
    if reachable.verdict is Verdict.FAIL:
        skipped = [Check(name, Verdict.SKIP, "not reachable") for name, _ in _REMOTE_CHECKS]
        return Diagnosis(endpoint, (reachable, *skipped, isolation))
    checks = [reachable]
    for name, check in _REMOTE_CHECKS:
        try:
            checks.append(check(connection))
        except AgentfleetError as exc:
            checks.append(failed_run(name, exc))
    return Diagnosis(endpoint, (*checks, isolation))


def check_reachable(connection: Connection) -> Check:
    endpoint = connection.endpoint
    try:
        connection.open()
    except Unreachable as exc:
        hint = f"is the {endpoint.backend} machine running? `pulumi up` starts it, or re-creates it if it is gone"
        return Check("reachable", Verdict.FAIL, f"cannot reach {exc.endpoint} ({exc.reason})", hint)
    except AgentfleetError as exc:
        return Check("reachable", Verdict.FAIL, str(exc), _REACH_HINTS.get(type(exc), ""))
    return Check("reachable", Verdict.OK, f"{endpoint.user}@{endpoint.address}")


_REACH_HINTS: dict[type[AgentfleetError], str] = {
    HostKeyMismatch: "an agent keeps its pinned key for life: something else holds the port; free it, then `pulumi up`",
    AuthenticationFailed: "the operator key is no longer authorized on the agent: `pulumi up --replace` its machine",
}


def failed_run(name: str, exc: AgentfleetError) -> Check:
    """A check whose command could not run to completion."""
    hint = "the agent is slow or stuck; run the check's command with agentfleet exec to see"
    return Check(name, Verdict.FAIL, str(exc), hint if isinstance(exc, CommandTimeout) else "")


_USER_NAMESPACES = {
    ("remapped", "docker"): "yes: root in the container is an unprivileged uid of its host (the engine runs with "
                            "userns-remap)",
    ("remapped", "kubernetes"): "yes: root in the pod is an unprivileged uid of its node (hostUsers: false)",
    ("none", "docker"): "no: root in the container is its host's root, held by its capabilities (the engine does not "
                        "run with userns-remap; docs/security.md)",
    ("none", "kubernetes"): "no: root in the pod is its node's root, held by its capabilities (the cluster cannot "
                            "give pods hostUsers: false; `pulumi preview` says why)",
}


def judge_user_namespace(endpoint: AgentEndpoint) -> Check:
    """Whether root in the agent is root of its host, as the machine was read back (an
    observation, never a failure: an agent without one is as usable)."""
    if endpoint.user_namespace is None:
        return Check("userns", Verdict.SKIP,
                     "not in the outputs yet: the next `pulumi up` reads it back from the machine")
    if endpoint.user_namespace == "vm":
        return Check("userns", Verdict.OK, "not applicable: the agent has a kernel of its own (a VM)")
    key = (endpoint.user_namespace, endpoint.backend)
    return Check("userns", Verdict.OK, _USER_NAMESPACES.get(key, endpoint.user_namespace))


def cloud_init_status(stdout: str) -> str:
    """The value of the `status:` line of `cloud-init status [--long]` ('' if none)."""
    for line in stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "status":
            return value.strip()
    return ""


def cloud_init_done(status: Result) -> bool:
    return status.ok and cloud_init_status(status.stdout) == "done"


def judge_cloud_init(agent: str, status: Result, long: Result | None) -> Check:
    """done passes; anything else fails with the --long detail (run only on failure)."""
    if status.exit_status == 127:
        return Check(
            "cloud-init",
            Verdict.FAIL,
            "cloud-init is not installed on the agent",
            "the machine was not built from the agentfleet image: rebuild it (images/)",
        )
    if cloud_init_done(status):
        return Check("cloud-init", Verdict.OK, "done")
    state = cloud_init_status(status.stdout) or f"unknown ({tail(status.stdout + status.stderr)})"
    detail = _long_detail(long) if long is not None else ""
    shown = f"{state}: {detail}" if detail else state
    if state in ("running", "not run"):
        return Check(
            "cloud-init",
            Verdict.FAIL,
            f"not finished ({shown})",
            f"wait for it: agentfleet exec {agent} -- cloud-init status --wait",
        )
    return Check(
        "cloud-init",
        Verdict.FAIL,
        shown,
        f"see what failed: agentfleet exec {agent} -- tail -n 50 /var/log/cloud-init-output.log",
    )


def _long_detail(long: Result) -> str:
    """The text after `detail:` in `cloud-init status --long`, on one line."""
    lines = long.stdout.splitlines()
    for index, line in enumerate(lines):
        key, _, rest = line.partition(":")
        if key.strip() == "detail":
            return " / ".join(part.strip() for part in [rest, *lines[index + 1 :]] if part.strip())
    return tail(long.stdout + long.stderr)


def judge_identity(result: Result, expected: Identity) -> Check:
    """The agent's global git user.name/user.email against the outputs."""
    found = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    wrong = []
    for key, want in (("user.name", expected.name), ("user.email", expected.email)):
        have = found.get(key)
        if have != want:
            state = "not set" if have is None else f"{have!r}"
            wrong.append(f"{key} is {state}, the outputs say {want!r}")
    if result.exit_status not in (0, 1):  # 1: no such key, already reported above
        wrong.append(f"git config failed: {tail(result.stderr)}")
    if wrong:
        return Check(
            "git identity",
            Verdict.FAIL,
            "; ".join(wrong),
            "cloud-init set it at first boot, so something on the agent changed ~/.gitconfig: "
            "fix it there, or rebuild the machine with `pulumi up --replace`",
        )
    return Check("git identity", Verdict.OK, str(expected))


def judge_workspace(agent: AgentEndpoint, result: Result) -> Check:
    """The workspace must hold a repository: the remote's clone, or the agent's own."""
    if result.ok:
        what = f"a clone of {agent.remote}" if agent.remote else "a repository"
        return Check("workspace", Verdict.OK, f"{agent.workspace} holds {what}")
    missing = f"no clone of {agent.remote}" if agent.remote else "no repository"
    return Check("workspace", Verdict.FAIL, f"{missing} in {agent.workspace}", empty_workspace_hint(agent))


def remote_command(remote: str, clone: str | None) -> list[str]:
    """ls-remote through the clone's origin when there is a clone, else the remote URL itself."""
    if clone is not None:
        return [*NO_PROMPT, "git", "-C", clone, "ls-remote", "--exit-code", "origin"]
    return [*NO_PROMPT, "git", "ls-remote", "--exit-code", remote]


def judge_remote(remote: str, result: Result, via_clone: bool) -> Check:
    """Exit 0 (refs) or 2 (an empty repository) mean the remote answered."""
    if result.exit_status in (0, 2):
        refs = len(result.stdout.splitlines())
        how = "through the workspace's origin" if via_clone else "(asked directly: no clone in the workspace)"
        return Check("remote", Verdict.OK, f"{remote} answers {how}: {refs} refs")
    said = head(result.stderr) or f"exit status {result.exit_status}"
    return Check(
        "remote",
        Verdict.FAIL,
        f"{remote}: {said}",
        "check the agent's remote credential (for ssh, remote_public_key must be a deploy key "
        "on the remote) and that the agent can reach the remote host",
    )


def _cloud_init(connection: Connection) -> Check:
    status = _run(connection, CLOUD_INIT_STATUS)
    explain = not cloud_init_done(status) and status.exit_status != 127
    long = _run(connection, CLOUD_INIT_STATUS_LONG) if explain else None
    return judge_cloud_init(connection.name, status, long)


def _identity(connection: Connection) -> Check:
    return judge_identity(_run(connection, GIT_IDENTITY), connection.endpoint.identity)


def _workspace(connection: Connection) -> Check:
    workspace = connection.endpoint.workspace
    if workspace is None:
        return Check("workspace", Verdict.SKIP, "the outputs name no workspace")
    return judge_workspace(connection.endpoint, _run(connection, repository_command(workspace)))


def _remote(connection: Connection) -> Check:
    remote, workspace = connection.endpoint.remote, connection.endpoint.workspace
    if remote is None:
        return Check("remote", Verdict.SKIP, "no remote")
    is_clone = workspace is not None and _run(connection, repository_command(workspace)).ok
    clone = workspace if is_clone else None
    return judge_remote(remote, _run(connection, remote_command(remote, clone)), is_clone)


def _run(connection: Connection, command: list[str]) -> Result:
    return connection.run(command, cwd=NEUTRAL_DIR, timeout=CHECK_TIMEOUT)


_REMOTE_CHECKS = (
    ("cloud-init", _cloud_init),
    ("git identity", _identity),
    ("workspace", _workspace),
    ("remote", _remote),
)
