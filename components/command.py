"""LocalCommand: a resource whose life is a pair of local commands (create, delete).

Why: every backend (Docker, Lima, Multipass) is driven through its own CLI, so one resource
shape serves all three. It plays the part of pulumi-command's `local.Command` (whose provider
cannot be built on machines that reach only package registries) as a Pulumi dynamic provider.
Secrets travel on stdin, never in argv or the environment; `triggers` decide replacement.
"""

from __future__ import annotations

import subprocess
from typing import Any, Optional, Sequence

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

# Changing any of these replaces the resource: the machine is rebuilt from its new definition.
REPLACING_INPUTS = ("create", "stdin", "triggers")
TAIL_LINES = 20


class CommandFailed(Exception):
    """A backend command exited non-zero; the message carries its exit status and output tail."""


def run_command(label: str, argv: Sequence[str], stdin: Optional[str]) -> str:
    """Run argv with stdin; return stdout, or raise with the tail of stderr (stdin never shown)."""
    completed = subprocess.run(
        list(argv), input=stdin or "", capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-TAIL_LINES:])
        raise CommandFailed(f"{label}: `{argv[0]}` exited {completed.returncode}:\n{tail}")
    return completed.stdout


class LocalCommandProvider(ResourceProvider):
    """Create runs `create`; delete runs `delete`; a change to a replacing input replaces."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        stdout = run_command(f"creating {props['resource_name']}", props["create"], props.get("stdin"))
        return CreateResult(id_=props["resource_name"], outs={**props, "stdout": stdout})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [key for key in (*REPLACING_INPUTS, "delete") if olds.get(key) != news.get(key)]
        return DiffResult(
            changes=bool(changed),
            replaces=[key for key in changed if key in REPLACING_INPUTS],
            delete_before_replace=True,
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]):
        # Only `delete` can change in place: remember the new one, keep what create printed.
        return UpdateResult(outs={**news, "stdout": olds.get("stdout", "")})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        run_command(f"deleting {props['resource_name']}", props["delete"], None)


class LocalCommand(Resource, module="agentfleet", name="LocalCommand"):
    """A machine (or any local artefact) made by one command and removed by another."""

    stdout: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        create: pulumi.Input[Sequence[pulumi.Input[str]]],
        delete: pulumi.Input[Sequence[pulumi.Input[str]]],
        stdin: Optional[pulumi.Input[str]] = None,
        triggers: Optional[pulumi.Input[Sequence[Any]]] = None,
        opts: Optional[pulumi.ResourceOptions] = None,
    ) -> None:
        secret_stdin = pulumi.ResourceOptions(additional_secret_outputs=["stdin"])
        super().__init__(
            LocalCommandProvider(),
            resource_name,
            {
                "resource_name": resource_name,
                "create": create,
                "delete": delete,
                "stdin": stdin,
                "triggers": triggers or [],
                "stdout": None,
            },
            pulumi.ResourceOptions.merge(opts, secret_stdin),
        )
