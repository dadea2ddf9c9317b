"""Where a fleet's outputs come from: a Pulumi stack of the project, or a JSON file of them.

The stack path shells out to the Pulumi CLI (argv list, stdout captured and never logged,
since it holds the agents' private keys) unless the outputs kept from the last call still match
the stack's state (agentfleet/cache.py); the file path serves machines without Pulumi.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agentfleet.cache import read_cached, state_key, write_cached
from agentfleet.errors import OutputsInvalid, PulumiError, StackNotFound, UsageError

DEFAULT_STACK = "dev"
STACK_ENV = "AGENTFLEET_STACK"
OUTPUTS_ENV = "AGENTFLEET_OUTPUTS"
BACKEND_ENV = "PULUMI_BACKEND_URL"
PULUMI_TIMEOUT = 120.0


def find_project(start: Path) -> Path | None:
    """The nearest directory at or above start holding a Pulumi.yaml."""
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / "Pulumi.yaml").is_file():
            return directory
    return None


@dataclass(frozen=True)
class Source:
    """One resolved origin of outputs; `name` labels the fleet (stack name or file stem)."""

    name: str
    stack: str | None
    outputs_file: Path | None
    project_dir: Path | None
    backend_url: str | None = None  # $PULUMI_BACKEND_URL when the source was resolved

    def describe(self) -> str:
        if self.outputs_file is not None:
            return f"outputs file {self.outputs_file}"
        return f"stack {self.stack!r}"

    @property
    def directory(self) -> Path | None:
        """The stack's own directory in the project (.agentfleet/<stack>): SSH files, audit log,
        kept outputs, background connection. None for an outputs file."""
        if self.stack is None or self.project_dir is None:
            return None
        return self.project_dir / ".agentfleet" / self.stack

    def state_key(self) -> str | None:
        """Identity of the stack's current state, if it can be watched (see agentfleet/cache.py)."""
        if self.stack is None or self.project_dir is None:
            return None
        return state_key(self.backend_url, self.project_dir, self.stack)

    def read(self) -> object:
        """The outputs as decoded JSON (secrets included)."""
        return self.read_keyed()[0]

    def read_keyed(self) -> tuple[object, str | None]:
        """The outputs, and the state key they belong to (None if they could not be kept)."""
        if self.outputs_file is not None:
            return _read_file(self.outputs_file, self.describe()), None
        assert self.stack is not None and self.project_dir is not None and self.directory is not None
        key = self.state_key()  # taken first: a state written meanwhile is read again next time
        if key is not None:
            kept = read_cached(self.directory, key)
            if kept is not None:
                return kept, key
        outputs = read_stack_outputs(self.project_dir, self.stack)
        if key is not None:
            write_cached(self.directory, key, outputs)
        return outputs, key


def resolve_source(
    stack: str | None = None,
    outputs: str | os.PathLike[str] | None = None,
    project_dir: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Source:
    """Pick the outputs' origin: arguments over environment, refusing two answers at one level.

    Defaults: AGENTFLEET_OUTPUTS, else AGENTFLEET_STACK, else stack "dev". The Pulumi project
    is found by walking up from project_dir (default: the current directory) to a Pulumi.yaml.
    """
    env = os.environ if environ is None else environ
    if stack and outputs:
        raise UsageError("give either --stack or --outputs, not both")
    if not stack and not outputs:
        stack, outputs = env.get(STACK_ENV) or None, env.get(OUTPUTS_ENV) or None
        if stack and outputs:
            raise UsageError(f"both {STACK_ENV} and {OUTPUTS_ENV} are set; unset one")
    start = Path(project_dir).absolute() if project_dir is not None else Path.cwd()
    project = find_project(start)
    if outputs:
        path = Path(outputs).absolute()
        return Source(name=path.stem, stack=None, outputs_file=path, project_dir=project)
    stack = stack or DEFAULT_STACK
    if project is None:
        raise StackNotFound(
            f"no Pulumi project (Pulumi.yaml) in {start} or its parents to read stack "
            f"{stack!r} from; run inside the project, pass --cwd DIR, or --outputs FILE"
        )
    return Source(
        name=stack, stack=stack, outputs_file=None, project_dir=project, backend_url=env.get(BACKEND_ENV)
    )


def stack_output_argv(stack: str) -> list[str]:
    return ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack]


def read_stack_outputs(project_dir: Path, stack: str) -> object:
    """Run `pulumi stack output` for the stack; its stdout is returned, never logged."""
    import subprocess  # only here: the fast path of `exec` never needs it

    argv = stack_output_argv(stack)
    try:
        done = subprocess.run(argv, cwd=project_dir, capture_output=True, text=True, timeout=PULUMI_TIMEOUT)
    except FileNotFoundError as exc:
        raise PulumiError("the pulumi CLI is not on PATH; run scripts/setup, or pass --outputs FILE") from exc
    except subprocess.TimeoutExpired as exc:
        raise PulumiError(f"`{' '.join(argv[:3])} --stack {stack}` took over {PULUMI_TIMEOUT:g} s") from exc
    if done.returncode != 0:
        said = _last_line(done.stderr) or f"exit status {done.returncode}"
        if "no stack named" in done.stderr:
            raise StackNotFound(
                f"no stack {stack!r} in {project_dir} ({said}); list them with "
                "`pulumi stack ls`, or pick one with --stack NAME"
            )
        raise PulumiError(f"`pulumi stack output --stack {stack}` failed: {said}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise PulumiError(f"`pulumi stack output --stack {stack}` did not print JSON ({exc.msg})") from exc


def _read_file(path: Path, described: str) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"cannot read {described}: {exc.strerror}; pass an existing file to --outputs or {OUTPUTS_ENV}"
        ) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise OutputsInvalid(described, [f"not JSON ({exc.msg}, line {exc.lineno})"]) from exc


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
