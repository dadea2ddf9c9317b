"""Reconciled: a resource whose provider creates, reads, changes in place and deletes a real thing.

Why one life for every kind of thing: each backend supplies a `Driver` (how its container, VM,
volume or network is made, read back, changed and removed) and `Reconciler` gives all of them
Pulumi's whole resource life, so `pulumi refresh` sees what really exists and `pulumi up` heals
drift the same way everywhere. Inputs are the flat fields that define the thing (so a preview
names the fields that change) plus at most one secret; outputs are the fields as read back, the
driver's extra outputs (an endpoint) and the secret's digest, never the secret itself.

The program declares a `Reconciled` resource (`agentfleet:index:<Kind>`); agentfleet's provider
plugin (components/provider) runs the `Reconciler` of its kind. Resources made by agentfleet
0.1 (Pulumi dynamic providers) are the same resources under their old type, through an alias.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import pulumi

from agentfleet import __version__

PACKAGE = "agentfleet"
SECRET = "secret"
# What a dynamic provider (agentfleet 0.1) kept in every resource's state: its pickled provider.
LEGACY_PROVIDER_KEY = "__provider"


class Unknown:
    """A value the engine does not know yet (a preview's key that is still to be made)."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = Unknown()


class Driver:
    """How one kind of thing lives. `fields` are its inputs without the secret (plus, after it
    was made, what was read back of it); each method returns the fields as they really are,
    plus any of `outputs` (e.g. the endpoint). `read` returns None when the thing is gone."""

    # Fields a thing that exists cannot change: a new value replaces it ("secret" among them
    # when a changed secret cannot be delivered to the running thing).
    replacing: frozenset[str] = frozenset()
    # Fields changed in place on the thing that exists.
    changing: frozenset[str] = frozenset()
    # What the one secret input holds, if the kind takes one (for the schema).
    secret_input: str = ""
    # Outputs that are read, never declared (they do not take part in the diff).
    outputs: frozenset[str] = frozenset()
    # Fields the driver chooses when the declaration leaves them out (a free port): outputs then.
    chosen: frozenset[str] = frozenset()
    # Outputs that are secrets (a generated private key).
    secret_outputs: frozenset[str] = frozenset()
    # Fields that guide the making only (a port to start searching at, a default placement):
    # never compared, so a changed hint moves nothing that exists.
    hints: frozenset[str] = frozenset()
    # The field whose value is the thing's id.
    id_field: str = "name"

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        raise NotImplementedError

    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        raise NotImplementedError

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        raise NotImplementedError

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        raise NotImplementedError


def digest(secret: Optional[str]) -> Optional[str]:
    return hashlib.sha256(secret.encode()).hexdigest() if secret is not None else None


def changed_fields(olds: dict[str, Any], news: dict[str, Any], driver: Driver) -> list[str]:
    """Declared fields whose value differs from what was read back, and the secret if it changed
    (or is not known yet, as in a preview where a key it holds is about to be made)."""
    changed = [key for key, value in news.items()
               if key != SECRET and key not in driver.outputs | driver.hints and olds.get(key) != value]
    secret = news.get(SECRET)
    if isinstance(secret, Unknown) or digest(secret) != olds.get(SECRET):
        changed.append(SECRET)
    return changed


@dataclass(frozen=True)
class Outcome:
    """A thing as it is after a step: its id (None: it is gone), its outputs, and (after a read
    that found drift) what was read as the inputs the next diff compares with."""

    id: Optional[str]
    outs: dict[str, Any] = field(default_factory=dict)
    inputs: Optional[dict[str, Any]] = None


@dataclass(frozen=True)
class Plan:
    changes: bool
    replaces: list[str]
    changed: list[str]
    delete_before_replace: bool = True  # names (containers, VMs, ports) are unique


class Reconciler:
    """Each step of a resource's life on plain values: the driver does the work, this keeps the
    secret out of the fields and out of the outputs (only its digest is kept)."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    def _fields(self, props: dict[str, Any]) -> dict[str, Any]:
        """The declared fields."""
        return {k: v for k, v in props.items()
                if k not in (SECRET, LEGACY_PROVIDER_KEY) and k not in self.driver.outputs}

    @staticmethod
    def _known(props: dict[str, Any]) -> dict[str, Any]:
        """Everything known of a thing that exists: its fields and what was read back."""
        return {k: v for k, v in props.items() if k not in (SECRET, LEGACY_PROVIDER_KEY)}

    def create(self, props: dict[str, Any]) -> Outcome:
        fields = self._fields(props)
        name = fields[self.driver.id_field]
        real = self.driver.create(name, fields, props.get(SECRET))
        return Outcome(name, {**fields, **real, SECRET: digest(props.get(SECRET))})

    def read(self, id_: str, props: dict[str, Any]) -> Outcome:
        fields = self._fields(props)
        real = self.driver.read(id_, self._known(props))
        if real is None:
            return Outcome(None)
        outs = {k: v for k, v in {**props, **real}.items() if k != LEGACY_PROVIDER_KEY}
        drifted = any(outs.get(key) != value for key, value in fields.items() if key not in self.driver.hints)
        # What was read becomes the inputs the next preview compares the declaration with, so it
        # names the drifted fields (`~ state: "stopped" => "running"`).
        return Outcome(id_, outs, self._fields(outs) if drifted else None)

    def diff(self, olds: dict[str, Any], news: dict[str, Any]) -> Plan:
        changed = changed_fields(olds, news, self.driver)
        return Plan(changes=bool(changed), replaces=[key for key in changed if key in self.driver.replacing],
                    changed=changed)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> Outcome:
        # What was read back (where the thing lives, a port it was given) stays known to the driver.
        known = {key: olds[key] for key in self.driver.outputs if key in olds}
        fields = self._fields(news)
        real = self.driver.update(id_, {**known, **fields}, news.get(SECRET))
        return Outcome(id_, {**fields, **real, SECRET: digest(news.get(SECRET))})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        self.driver.delete(id_, self._known(props))


class Reconciled(pulumi.CustomResource):
    """A thing made and kept by a driver, served by agentfleet's provider as
    `agentfleet:index:<KIND>`; `fields` must hold the driver's id field (`name`)."""

    KIND: ClassVar[str] = ""

    def __init__(
        self,
        resource_name: str,
        fields: dict[str, Any],
        secret: Optional[pulumi.Input[str]] = None,
        opts: Optional[pulumi.ResourceOptions] = None,
    ) -> None:
        from components.provider.kinds import driver  # the table names this module's kinds

        machine = driver(self.KIND)
        props: dict[str, Any] = {**{key: None for key in machine.outputs | machine.chosen}, **fields}
        if secret is not None:
            props[SECRET] = pulumi.Output.secret(secret)
        own = pulumi.ResourceOptions(
            version=__version__,
            # Names (containers, VMs, ports) are unique: also a replacement asked for with
            # `pulumi up --replace`, where the provider's diff has no say, deletes first.
            delete_before_replace=True,
            # The same resource as agentfleet 0.1 made it with a dynamic provider: nothing is replaced.
            aliases=[pulumi.Alias(type_=f"pulumi-python:dynamic/agentfleet:{self.KIND}")],
        )
        super().__init__(type_token(self.KIND), resource_name, props, pulumi.ResourceOptions.merge(opts, own))


def type_token(kind: str) -> str:
    return f"{PACKAGE}:index:{kind}"
