"""`agentfleet`: argument parsing and the one place expected failures become exit statuses.

Streams and environment are parameters of main(), so tests run the CLI in-process. Start-up is
kept light (`python -X importtime -m agentfleet`): the subcommands, and with them paramiko, are
imported only when a command runs in-process, not when a background connection runs it.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import TextIO

from agentfleet import control
from agentfleet.audit import LOG_ENV
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
from agentfleet.source import OUTPUTS_ENV, STACK_ENV, Source, resolve_source


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

CONNECT_TIMEOUT = 10.0
LOCATION = str(Path(__file__).resolve().parents[1])  # which clone's code runs (--version)


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
    parser.add_argument("--version", action=_Version, nargs=0, help="say agentfleet's version and which clone's code this is, and exit")
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")

    def add(name: str, help: str, usage: str | None = None, epilog: str | None = None) -> argparse.ArgumentParser:
        """A subcommand run by agentfleet.commands.cmd_<name> (imported when it runs)."""
        child = sub.add_parser(name, help=help, description=help, usage=usage, epilog=epilog)
        _source_options(child, argparse.SUPPRESS)
        child.set_defaults(connect_timeout=CONNECT_TIMEOUT)
        return child

    ls = add("ls", "list the agents, their endpoints and whether each answers")
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

    status = add(
        "status",
        "where each agent's work stands: health, branch, HEAD, ahead/behind the base, changes",
        epilog="the base is the remote's default branch (else main), fetched first in each agent",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--parallel", type=_positive, default=8, metavar="N")

    overlaps = add(
        "overlaps",
        "which agents change the same files, and whose changes would conflict (git merge-tree, here)",
        epilog="exit status 1 when a conflict is predicted, between two agents or with the base, "
        "or when an agent's work could not be read",
    )
    overlaps.add_argument("--json", action="store_true", help="print JSON instead of tables")
    overlaps.add_argument("--parallel", type=_positive, default=8, metavar="N")

    dashboard = add(
        "dashboard",
        "a live web page of the fleet: the status table and who collides with whom, on which files",
        epilog="it listens on 127.0.0.1 only, prints its URL (with a random token) and runs until Ctrl-C; "
        "read only",
    )
    dashboard.add_argument("--port", type=_port, default=0, metavar="PORT", help="default: a free one")
    dashboard.add_argument(
        "--interval", type=_seconds, default=5.0, metavar="SECONDS", help="between readings of the fleet (default: 5)"
    )
    dashboard.add_argument("--parallel", type=_positive, default=8, metavar="N")

    run = add(
        "exec",
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

    ssh = add("ssh-config", "write ssh_config, known_hosts and keys for OpenSSH")
    ssh.add_argument(
        "--output", metavar="DIR", help="where to write them (default: .agentfleet/<stack> in the project)"
    )

    doctor = add("doctor", "check each agent: reachable, cloud-init, git identity, workspace, remote")
    doctor.add_argument("name", nargs="?", metavar="NAME")
    doctor.add_argument("--parallel", type=_positive, default=4, metavar="N")

    audit = add(
        "audit",
        "show the commands run in the agents: the operator's log and git's own trace, merged by time",
        epilog=f"the operator's log: ${LOG_ENV}, else .agentfleet/<stack>/audit.jsonl in the project; "
        "--denied reads each agent's own record of refusals (docs/security.md)",
    )
    audit.add_argument("name", nargs="?", metavar="NAME", help="only this agent")
    audit.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only from WHEN on: an ISO time (local unless it has an offset) or an age: 10m, 2h, 1d",
    )
    audit.add_argument(
        "--denied",
        action="store_true",
        help="instead: the connections and DNS names each agent's egress policy refused",
    )
    audit.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    audit.add_argument("--parallel", type=_positive, default=8, metavar="N")

    keys = add(
        "deploy-keys",
        "list the keys the fleet generated for its remotes, to register as deploy keys",
        epilog="each with write access (agents push); --json prints title, key and read_only as "
        "GitHub's deploy-key API takes them, with agent and remote",
    )
    keys.add_argument("--json", action="store_true", help="print JSON instead of text")

    pr = add(
        "pr",
        "open (or show) the pull request from an agent's branch to the repository's base branch",
        usage="agentfleet pr [options] (NAME [--title TEXT] | --all) [--json]",
        epilog="needs `forge:` in the fleet config (docs/forge.md); --all skips agents whose branch the "
        "forge does not have or has nothing to merge; exit status 1 when NAME's pull request could not be opened",
    )
    pr.add_argument("name", nargs="?", metavar="NAME")
    pr.add_argument("--all", action="store_true", help="every agent whose pushed branch has commits ahead")
    pr.add_argument("--title", metavar="TEXT", help="title of a new pull request (default: agentfleet STACK/NAME: BRANCH)")
    pr.add_argument("--json", action="store_true", help="print JSON instead of text")

    clone = add("clone", "clone the remote into every agent's empty workspace (after deploy-keys)")
    clone.add_argument("name", nargs="?", metavar="NAME", help="only this agent (default: all)")
    clone.add_argument(
        "--timeout", type=_seconds, default=600.0, metavar="SECONDS", help="per clone (default: 600)"
    )
    clone.add_argument("--parallel", type=_positive, default=4, metavar="N")

    new = sub.add_parser("new", help="make a fleet project of your own in DIR: Pulumi.yaml, program, dev stack",
                         description="make a fleet project of your own in DIR (new or empty): Pulumi.yaml, the "
                         "program, Pulumi.dev.yaml with two Docker agents, requirements.txt pinning this "
                         "agentfleet, .gitignore, README.md")
    new.add_argument("directory", metavar="DIR")
    new.add_argument("--yaml", action="store_true", help="a Pulumi YAML program (no code) instead of Python")
    new.add_argument("--name", metavar="NAME", help="the Pulumi project's name (default: DIR's name)")
    new.set_defaults(traceback=False)

    image = sub.add_parser("image", help="build the agent image from this agentfleet's recipe (once per machine)")
    image.set_defaults(traceback=False)

    add(
        "disconnect",
        "end the stack's background connection (`exec` starts one; it ends by itself when idle)",
        epilog=f"${control.PERSIST_ENV}: seconds it stays after its last command (default "
        f"{control.DEFAULT_PERSIST:g}; 0: never start one)",
    )
    return parser


class _Version(argparse.Action):
    """Prints the version and location unwrapped (argparse's version action wraps long paths)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from agentfleet import __version__

        sys.stdout.write(f"agentfleet {__version__} from {LOCATION}\n")
        parser.exit()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be a port number, or 0 for a free one")
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
    from agentfleet.timeline import parse_since  # imports the SSH client: only for `audit`

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
        return _dispatch(args, out, err, os.environ if environ is None else environ)
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


def remote_command(words: list[str]) -> list[str] | str:
    """Several words are an argv (quoted for the remote shell); one word is a shell line."""
    if not words:
        raise UsageError("give the command after --: agentfleet exec agent-1 -- git status")
    return words[0] if len(words) == 1 else words


def _dispatch(args: argparse.Namespace, out: TextIO, err: TextIO, environ: Mapping[str, str]) -> int:
    if args.command and args.subcommand != "exec":
        raise UsageError(f"`agentfleet {args.subcommand}` takes no command after --")
    if args.subcommand in ("new", "image"):  # neither reads a fleet
        return _without_fleet(args, out, environ)
    if args.subcommand == "exec":
        args.remote_command = remote_command(args.command)
        if args.all == bool(args.name):
            raise UsageError("give one agent NAME or --all: agentfleet exec agent-1 -- git status")
    if args.subcommand == "pr" and (args.all == bool(args.name) or (args.all and args.title)):
        raise UsageError("give one agent NAME (with --title, if you like) or --all: agentfleet pr agent-1")
    source = resolve_source(args.stack, args.outputs, args.cwd, environ)
    if args.subcommand == "disconnect":
        return _disconnect(source, out)
    key = _background(source, environ) if args.subcommand == "exec" and args.name else None
    if key is not None:
        request = {"agent": args.name, "command": args.remote_command, "cwd": args.dir, "timeout": args.timeout}
        status = control.exec_via_master(source, key, request, out, err)
        if status is not None:
            return status
    return _run(args, source, out, err, environ, start_master=key is not None)


def _without_fleet(args: argparse.Namespace, out: TextIO, environ: Mapping[str, str]) -> int:
    if args.subcommand == "image":
        from agentfleet.agentimage import build_agent_image

        return build_agent_image(out, environ)
    from agentfleet.scaffold import scaffold

    project = scaffold(Path(args.directory), args.name, args.yaml)
    flavour = "YAML" if project.yaml else "Python"
    out.write(f"made {flavour} fleet project {project.name} in {project.directory}; next: its README.md\n")
    return 0


def _background(source: Source, environ: Mapping[str, str]) -> dict[str, object] | None:
    """The key of the background connection `exec` may use, or None where there is none."""
    if source.directory is None or control.persist_seconds(environ) == 0:
        return None
    return control.master_key(source, environ)


def _disconnect(source: Source, out: TextIO) -> int:
    if source.directory is None:
        raise UsageError("`disconnect` ends a stack's background connection; give --stack, not --outputs")
    stopped = control.stop_master(source)
    out.write(f"{'ended' if stopped else 'no'} background connection of {source.describe()}\n")
    return 0


def _run(
    args: argparse.Namespace,
    source: Source,
    out: TextIO,
    err: TextIO,
    environ: Mapping[str, str],
    start_master: bool = False,
) -> int:
    """Run the subcommand in this process: read the fleet, open connections as needed. With
    start_master, a background connection starts for the next calls once the outputs are kept."""
    from agentfleet import commands  # the SSH client and everything else: not needed earlier
    from agentfleet.fleet import Fleet

    fleet = Fleet.from_source(source, environ, connect_timeout=args.connect_timeout)
    if start_master:
        control.spawn_master(source, environ)
    start = Path(args.cwd).absolute() if args.cwd else Path.cwd()
    command = getattr(commands, "cmd_" + args.subcommand.replace("-", "_"))
    with fleet:
        return int(command(args, commands.Context(fleet, source, start, out, err)))
