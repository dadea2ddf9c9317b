"""The CLI's subcommands; each takes parsed arguments and a Context and returns an exit status."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from agentfleet.audit import LOG_ENV, AuditRecord
from agentfleet.doctor import diagnose
from agentfleet.errors import AgentfleetError, UsageError
from agentfleet.fleet import Fleet
from agentfleet.parallel import for_each
from agentfleet.render import (
    PrefixedLines,
    ls_record,
    outcome_line,
    render_audit_json,
    render_audit_table,
    render_diagnosis,
    render_ls_json,
    render_ls_table,
    render_summary,
    retry_line,
)
from agentfleet.source import Source
from agentfleet.sshconfig import SshFiles, write_ssh_files
from agentfleet.timeline import timeline
from agentfleet.trace2 import AgentTrace, read_trace


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


def cmd_exec(args: argparse.Namespace, ctx: Context) -> int:
    command = _remote_command(args.command)
    if args.all == bool(args.name):
        raise UsageError("give one agent NAME or --all: agentfleet exec agent-1 -- git status")
    if args.all:
        return _exec_all(args, ctx, command)
    streams = {"stdout": ctx.out, "stderr": ctx.err}

    def forward(which: str, text: str) -> None:
        streams[which].write(text)
        streams[which].flush()

    def retrying(attempt: int, reason: str, wait: float) -> None:
        forward("stderr", retry_line(args.name, attempt, reason, wait))

    result = ctx.fleet.agent(args.name).run(
        command, cwd=args.dir, timeout=args.timeout, stream=forward, retries=args.retry, on_retry=retrying
    )
    return result.exit_status if 0 <= result.exit_status <= 255 else 255


def _remote_command(words: list[str]) -> list[str] | str:
    """Several words are an argv (quoted for the remote shell); one word is a shell line."""
    if not words:
        raise UsageError("give the command after --: agentfleet exec agent-1 -- git status")
    return words[0] if len(words) == 1 else words


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
    for failure in filter(None, failures):
        ctx.err.write(f"{failure}\n")
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
