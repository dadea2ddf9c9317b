"""The CLI's subcommands; each takes parsed arguments and a Context and returns an exit status."""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from agentfleet.audit import LOG_ENV, AuditRecord
from agentfleet.baselag import base_warning
from agentfleet.connection import Connection
from agentfleet.dashboard import Dashboard, reading
from agentfleet.denied import AgentDenied, merged, read_denied
from agentfleet.doctor import diagnose
from agentfleet.errors import AgentfleetError
from agentfleet.fleet import Fleet
from agentfleet.parallel import for_each
from agentfleet.render import (
    PrefixedLines,
    render_clone,
    render_deploy_keys,
    ls_record,
    outcome_line,
    render_audit_json,
    render_audit_table,
    render_denied_table,
    render_diagnosis,
    render_ls_json,
    render_ls_table,
    render_overlaps,
    render_status_json,
    render_status_table,
    status_problems,
    render_summary,
    retry_line,
)
from agentfleet.source import Source
from agentfleet.sshconfig import SshFiles, write_ssh_files
from agentfleet.timeline import timeline
from agentfleet.trace2 import AgentTrace, read_trace
from agentfleet.workspace import (
    FIRST_CLONE,
    NEUTRAL_DIR,
    CloneOutcome,
    deploy_keys,
    judge_clone,
    repository_command,
)


@dataclass(frozen=True)
class Context:
    fleet: Fleet
    source: Source
    start_dir: Path  # where the command looked for the project (--cwd or the current directory)
    out: TextIO
    err: TextIO


def cmd_ls(args: argparse.Namespace, ctx: Context) -> int:
    """Agents and whether each answers: a full SSH login (pinned key, operator key)."""
    fleet = ctx.fleet
    outcomes = for_each(fleet.names, lambda name: fleet.agent(name).open(), args.parallel)
    errors = {
        name: outcome if isinstance(outcome, AgentfleetError) else None for name, outcome in outcomes.items()
    }
    agents = list(fleet.agents.values())
    if args.json:
        ctx.out.write(render_ls_json([ls_record(agent, errors[agent.name]) for agent in agents]))
    else:
        ctx.out.write(render_ls_table(agents, errors))
        for error in filter(None, errors.values()):
            ctx.err.write(f"{error}\n")
    return 0


def cmd_status(args: argparse.Namespace, ctx: Context) -> int:
    """Every agent's git state; like `ls`, an unreachable agent is a row, not a failure."""
    statuses = ctx.fleet.status(parallel=args.parallel)
    if args.json:
        ctx.out.write(render_status_json(statuses))
    else:
        ctx.out.write(render_status_table(statuses))
        for problem in status_problems(statuses):
            ctx.err.write(f"{problem}\n")
    return 0


def cmd_overlaps(args: argparse.Namespace, ctx: Context) -> int:
    """1 when a conflict is predicted, or when an agent is left out and could hide one."""
    overlaps = ctx.fleet.overlaps(parallel=args.parallel)
    if args.json:
        ctx.out.write(json.dumps(overlaps.to_json(), indent=2) + "\n")
    else:
        ctx.out.write(render_overlaps(overlaps))
    for status in overlaps.unread:
        ctx.err.write(f"{status.name}: left out: {status.error}\n")
    return 1 if overlaps.conflict_predicted or overlaps.unread else 0


def cmd_dashboard(args: argparse.Namespace, ctx: Context) -> int:
    """Serve the page until Ctrl-C; the URL is the only output (it holds the token)."""
    with Dashboard(lambda: reading(ctx.fleet, args.parallel), args.port, args.interval) as dashboard:
        ctx.out.write(f"{dashboard.url}\n")
        ctx.out.flush()
        dashboard.wait()
    return 0


def cmd_exec(args: argparse.Namespace, ctx: Context) -> int:
    """args.remote_command and NAME or --all were checked by the CLI before anything was read."""
    command = args.remote_command
    if args.all:
        return _exec_all(args, ctx, command)
    streams = {"stdout": ctx.out, "stderr": ctx.err}

    def forward(which: str, text: str) -> None:
        streams[which].write(text)
        streams[which].flush()

    def retrying(attempt: int, reason: str, wait: float) -> None:
        forward("stderr", retry_line(args.name, attempt, reason, wait))

    agent = ctx.fleet.ready(args.name)
    result = agent.run(
        command, cwd=args.dir, timeout=args.timeout, stream=forward, retries=args.retry, on_retry=retrying
    )
    warning = base_warning(agent)
    if warning:
        forward("stderr", warning)
    return result.exit_status if 0 <= result.exit_status <= 255 else 255


def _exec_all(args: argparse.Namespace, ctx: Context, command: list[str] | str) -> int:
    lines = PrefixedLines(ctx.fleet.names, ctx.out, ctx.err)

    def retrying(name: str, attempt: int, reason: str, wait: float) -> None:
        lines.finish(name)  # the failed attempt's last line, whole, before the notice
        lines.write(name, "stderr", retry_line(name, attempt, reason, wait))

    outcomes = ctx.fleet.run_all(
        command,
        parallel=args.parallel,
        cwd=args.dir,
        timeout=args.timeout,
        stream=lines.write,
        retries=args.retry,
        on_retry=retrying,
    )
    failures = []
    for name, outcome in outcomes.items():
        lines.finish(name)
        failures.append(outcome_line(name, outcome))
    reached = [name for name, outcome in outcomes.items() if not isinstance(outcome, AgentfleetError)]
    # base_warning may fetch the base: a network git operation like any other.
    warnings = for_each(reached, lambda name: ctx.fleet.throttled(name, lambda: base_warning(ctx.fleet.agent(name))),
                        args.parallel)
    for line in filter(None, [*warnings.values(), *failures]):
        ctx.err.write(line if line.endswith("\n") else f"{line}\n")
    ctx.err.write(render_summary(outcomes))
    return 1 if any(failures) else 0


def cmd_ssh_config(args: argparse.Namespace, ctx: Context) -> int:
    base = ctx.source.project_dir or ctx.start_dir
    directory = Path(args.output).absolute() if args.output else base / ".agentfleet" / ctx.source.name
    files = SshFiles(directory)
    write_ssh_files(ctx.fleet.agents.values(), files, ctx.source.name)
    config = shlex.quote(str(files.config))
    example = next(iter(ctx.fleet.agents.values()), None)
    name = example.name if example else "NAME"
    path = (example.workspace if example else None) or "PATH"
    ctx.out.write(
        f"wrote {files.config}, {files.known_hosts.name} and {files.keys.name}/ "
        f"for {len(ctx.fleet.agents)} agents; use them with\n"
        f"  ssh -F {config} {name}\n"
        f'  GIT_SSH_COMMAND="ssh -F {config}" git clone {name}:{path}\n'
        f"  or put `Include {files.config}` at the top of ~/.ssh/config, then: ssh {name}\n"
    )
    return 0


def cmd_doctor(args: argparse.Namespace, ctx: Context) -> int:
    fleet = ctx.fleet
    names = [fleet.endpoint(args.name).name] if args.name else list(fleet.names)
    diagnoses = for_each(names, lambda name: diagnose(fleet.agent(name)), args.parallel)
    failed = 0
    for diagnosis in diagnoses.values():
        if isinstance(diagnosis, AgentfleetError):  # diagnose turns failures into checks
            raise diagnosis
        ctx.out.write(render_diagnosis(diagnosis))
        failed += not diagnosis.ok
    if failed:
        ctx.out.write(f"{failed} of {len(names)} agents failed a check\n")
    else:
        ctx.out.write(f"all {len(names)} agents healthy\n")
    return 1 if failed else 0


def cmd_audit(args: argparse.Namespace, ctx: Context) -> int:
    """The operator's log and each agent's git trace, merged by time; fails if any part is missing."""
    fleet = ctx.fleet
    names = [fleet.endpoint(args.name).name] if args.name else list(fleet.names)
    if args.denied:
        return _audit_denied(args, ctx, names)
    outcomes = for_each(names, lambda name: read_trace(fleet.agent(name)), args.parallel)
    traces = [outcome for outcome in outcomes.values() if isinstance(outcome, AgentTrace)]
    problems = [
        outcome_line(name, outcome)
        for name, outcome in outcomes.items()
        if not isinstance(outcome, AgentTrace)
    ]
    problems += [f"{trace.agent}: {trace.problem}" for trace in traces if trace.problem]
    records: list[AuditRecord] = []
    if fleet.audit is None:
        ctx.err.write(
            f"no operator log for {ctx.source.describe()}: only a stack's commands are logged, "
            f"unless {LOG_ENV} names a log\n"
        )
    else:
        records, bad = fleet.audit.records()  # read after the traces: those reads are on record too
        if bad:
            problems.append(f"{fleet.audit.path}: {bad} lines are not audit records, skipped")
    entries = timeline(records, traces, fleet.name, names, args.since)
    ctx.out.write(render_audit_json(entries) if args.json else render_audit_table(entries))
    for problem in problems:
        ctx.err.write(f"{problem}\n")
    return 1 if problems else 0


def _audit_denied(args: argparse.Namespace, ctx: Context, names: list[str]) -> int:
    """What the agents' egress policies refused, merged by time; fails if a record is missing."""
    outcomes = for_each(names, lambda name: read_denied(ctx.fleet.agent(name)), args.parallel)
    records = [outcome for outcome in outcomes.values() if isinstance(outcome, AgentDenied)]
    problems = [outcome_line(name, outcome) for name, outcome in outcomes.items()
                if not isinstance(outcome, AgentDenied)]
    problems += [f"{record.agent}: {record.problem}" for record in records if record.problem]
    entries = merged(records, names, args.since)
    ctx.out.write(render_audit_json(entries) if args.json else render_denied_table(entries))
    for problem in problems:
        ctx.err.write(f"{problem}\n")
    return 1 if problems else 0


def cmd_deploy_keys(args: argparse.Namespace, ctx: Context) -> int:
    """The generated keys to register on the remotes; reads the outputs only, connects nowhere."""
    keys = deploy_keys(ctx.fleet.agents.values(), ctx.fleet.name)
    if args.json:
        ctx.out.write(json.dumps([key.to_json() for key in keys], indent=2) + "\n")
    elif keys:
        ctx.out.write(render_deploy_keys(keys))
    if not keys:
        ctx.err.write(
            f"no agent of {ctx.source.describe()} has a generated remote key (agents without a "
            "remote, or with credential ssh_key or https_token, have none to register)\n"
        )
    return 0


def cmd_pr(args: argparse.Namespace, ctx: Context) -> int:
    """Pull requests through the forge's API; reads the outputs, connects to no agent."""
    from agentfleet.pulls import open_pull, pull_client

    names = [ctx.fleet.endpoint(args.name).name] if args.name else list(ctx.fleet.names)
    with pull_client(ctx.source.read(), ctx.source.describe()) as client:
        base = client.repository().default_branch
        existing = client.open_pulls()
        outcomes = [open_pull(client, ctx.fleet.name, name, ctx.fleet.endpoint(name).branch, base, args.title,
                              existing) for name in names]
    if args.json:
        ctx.out.write(json.dumps([outcome.to_json() for outcome in outcomes], indent=2) + "\n")
    else:
        ctx.out.write("".join(outcome.line() for outcome in outcomes))
    return 0 if args.all or all(outcome.ok for outcome in outcomes) else 1


def cmd_clone(args: argparse.Namespace, ctx: Context) -> int:
    """Run each chosen agent's first-boot clone where its workspace holds no repository yet."""
    fleet = ctx.fleet
    names = [fleet.endpoint(args.name).name] if args.name else list(fleet.names)
    outcomes = for_each(names, lambda name: fleet.throttled(name, lambda: _clone(fleet.agent(name), args.timeout)),
                        args.parallel)
    failed = 0
    for name, outcome in outcomes.items():
        if isinstance(outcome, AgentfleetError):
            outcome = CloneOutcome(name, "failed", str(outcome))
        ctx.out.write(render_clone(outcome))
        failed += not outcome.ok
    return 1 if failed else 0


def _clone(connection: Connection, timeout: float) -> CloneOutcome:
    agent = connection.endpoint
    if agent.workspace is None:
        return CloneOutcome(agent.name, "present", "the outputs name no workspace")
    check = repository_command(agent.workspace)
    if connection.run(check, cwd=NEUTRAL_DIR, timeout=timeout).ok:
        return CloneOutcome(agent.name, "present", f"{agent.workspace} holds a repository already")
    run = connection.run([FIRST_CLONE], cwd=NEUTRAL_DIR, timeout=timeout)
    return judge_clone(agent, run, connection.run(check, cwd=NEUTRAL_DIR, timeout=timeout).ok)
