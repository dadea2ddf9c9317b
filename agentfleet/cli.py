"""`agentfleet`: argument parsing and the one place expected failures become exit statuses.

Streams and environment are parameters of main(), so tests run the CLI in-process.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import TextIO

from agentfleet.audit import LOG_ENV
from agentfleet.commands import Context, cmd_audit, cmd_doctor, cmd_exec, cmd_ls, cmd_ssh_config
from agentfleet.errors import (
    AgentfleetError,
    AuthenticationFailed,
    CommandTimeout,
    HostKeyMismatch,
    OutputsInvalid,
    PulumiError,
    UnknownAgent,
    Unreachable,
    UsageError,
)
from agentfleet.fleet import Fleet
from agentfleet.source import OUTPUTS_ENV, STACK_ENV, resolve_source
from agentfleet.timeline import parse_since


class ExitStatus(IntEnum):
    """What `agentfleet` exits with; `exec NAME` exits with the remote command's own status."""

    OK = 0
    FAILED = 1  # a command or a doctor check failed on some agent
    USAGE = 2  # bad options, unknown agent
    OUTPUTS = 3  # no project or stack, pulumi failed, outputs break the contract
    TIMEOUT = 124  # a command outlived --timeout (as timeout(1))
    INTERRUPTED = 130  # Ctrl-C
    BROKEN_PIPE = 141  # 128 + SIGPIPE: the output's reader went away
    CONNECTION = 255  # unreachable, host key changed, key refused (as ssh(1))


ERROR_STATUS: tuple[tuple[type[AgentfleetError], ExitStatus], ...] = (
    (UsageError, ExitStatus.USAGE),
    (UnknownAgent, ExitStatus.USAGE),
    (PulumiError, ExitStatus.OUTPUTS),
    (OutputsInvalid, ExitStatus.OUTPUTS),
    (CommandTimeout, ExitStatus.TIMEOUT),
    (Unreachable, ExitStatus.CONNECTION),
    (HostKeyMismatch, ExitStatus.CONNECTION),
    (AuthenticationFailed, ExitStatus.CONNECTION),
)

Command = Callable[[argparse.Namespace, Context], int]
CONNECT_TIMEOUT = 10.0


def exit_status_for(error: AgentfleetError) -> ExitStatus:
    return next((status for kind, status in ERROR_STATUS if isinstance(error, kind)), ExitStatus.FAILED)


def _source_options(parser: argparse.ArgumentParser, default: object) -> None:
    """Options accepted before and after the subcommand (after: SUPPRESS keeps the first)."""
    parser.add_argument(
        "--stack",
        metavar="NAME",
        default=default,
        help=f"read this stack's outputs (default: ${STACK_ENV} or dev)",
    )
    parser.add_argument(
        "--outputs",
        metavar="FILE",
        default=default,
        help=f"read outputs from this JSON file instead (default: ${OUTPUTS_ENV})",
    )
    parser.add_argument(
        "--cwd",
        metavar="DIR",
        default=default,
        help="look for the Pulumi project (Pulumi.yaml) from DIR upwards",
    )
    parser.add_argument(
        "--traceback", action="store_true", default=default, help="show the Python traceback of an error"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentfleet",
        description="Run commands (git above all) in the agents of an agentfleet stack.",
        epilog="exit status: the remote command's for `exec NAME`; otherwise "
        + ", ".join(f"{status.value} {status.name.lower()}" for status in ExitStatus),
    )
    _source_options(parser, None)
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")

    def add(
        name: str, command: Command, help: str, usage: str | None = None, epilog: str | None = None
    ) -> argparse.ArgumentParser:
        child = sub.add_parser(name, help=help, description=help, usage=usage, epilog=epilog)
        _source_options(child, argparse.SUPPRESS)
        child.set_defaults(run=command, connect_timeout=CONNECT_TIMEOUT)
        return child

    ls = add("ls", cmd_ls, "list the agents, their endpoints and whether each answers")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.add_argument(
        "--timeout",
        dest="connect_timeout",
        type=_seconds,
        default=3.0,
        metavar="SECONDS",
        help="connect timeout per agent (default: 3)",
    )
    ls.add_argument("--parallel", type=_positive, default=8, metavar="N")

    run = add(
        "exec",
        cmd_exec,
        "run a command in one agent, or in all: exec NAME -- CMD ...",
        usage="agentfleet exec [options] (NAME | --all) -- CMD [ARG ...]\n"
        "  several words after -- are an argv, quoted for the remote shell; "
        "one word is a shell command line",
    )
    run.add_argument("name", nargs="?", metavar="NAME")
    run.add_argument("--all", action="store_true", help="run in every agent, lines prefixed")
    run.add_argument(
        "--parallel", type=_positive, default=4, metavar="N", help="with --all: agents at once (default: 4)"
    )
    run.add_argument("--timeout", type=_seconds, metavar="SECONDS", help="give up after this long")
    run.add_argument(
        "--retry",
        type=_count,
        default=0,
        metavar="N",
        help="try a failed command (non-zero exit, lost connection) up to N more times, "
        "waiting about 1, 2, 4 ... s (at most 30 s) in between (default: 0)",
    )
    run.add_argument(
        "-C", "--dir", metavar="DIR", help="directory on the agent to run in (default: its workspace)"
    )

    ssh = add("ssh-config", cmd_ssh_config, "write ssh_config, known_hosts and keys for OpenSSH")
    ssh.add_argument(
        "--output", metavar="DIR", help="where to write them (default: .agentfleet/<stack> in the project)"
    )

    doctor = add("doctor", cmd_doctor, "check each agent: reachable, cloud-init, git identity, remote")
    doctor.add_argument("name", nargs="?", metavar="NAME")
    doctor.add_argument("--parallel", type=_positive, default=4, metavar="N")

    audit = add(
        "audit",
        cmd_audit,
        "show the commands run in the agents: the operator's log and git's own trace, merged by time",
        epilog=f"the operator's log: ${LOG_ENV}, else .agentfleet/<stack>/audit.jsonl in the project",
    )
    audit.add_argument("name", nargs="?", metavar="NAME", help="only this agent")
    audit.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only from WHEN on: an ISO time (local unless it has an offset) or an age: 10m, 2h, 1d",
    )
    audit.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    audit.add_argument("--parallel", type=_positive, default=8, metavar="N")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _since(text: str) -> datetime:
    try:
        return parse_since(text, datetime.now(UTC))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Options before the first `--`, the remote command after it."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1 :]


def main(
    argv: Sequence[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    options, command = split_command(sys.argv[1:] if argv is None else argv)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            args = build_parser().parse_args(options)
    except SystemExit as exit:
        return int(exit.code or 0)
    args.command = command
    try:
        return _run(args, out, err, os.environ if environ is None else environ)
    except AgentfleetError as error:
        if args.traceback:
            traceback.print_exc(file=err)
        err.write(f"agentfleet: {error}\n")
        return exit_status_for(error)
    except KeyboardInterrupt:
        err.write("agentfleet: interrupted\n")
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`agentfleet exec --all -- … | head`): stop quietly, as Unix tools do.
        if out is sys.stdout:  # so the interpreter's final flush does not raise again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitStatus.BROKEN_PIPE


def _run(args: argparse.Namespace, out: TextIO, err: TextIO, environ: Mapping[str, str]) -> int:
    if args.command and args.subcommand != "exec":
        raise UsageError(f"`agentfleet {args.subcommand}` takes no command after --")
    source = resolve_source(args.stack, args.outputs, args.cwd, environ)
    fleet = Fleet.from_source(source, environ, connect_timeout=args.connect_timeout)
    start = Path(args.cwd).absolute() if args.cwd else Path.cwd()
    command: Command = args.run
    with fleet:
        return command(args, Context(fleet, source, start, out, err))
