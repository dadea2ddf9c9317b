"""Reconciled: a resource whose provider creates, reads, changes in place and deletes a real thing.

Why one provider for every kind of thing: each backend supplies a `Driver` (how its container,
VM, volume or network is made, read back, changed and removed) and this module gives all of them
Pulumi's whole resource life, so `pulumi refresh` sees what really exists and `pulumi up` heals
drift the same way everywhere. Inputs are the flat fields that define the thing (so a preview
names the fields that change) plus at most one secret; outputs are the fields as read back, the
driver's extra outputs (an endpoint) and the secret's digest, never the secret itself. The
provider is pickled by reference (a module path), so upgrading agentfleet changes no input.
"""

from __future__ import annotations

import hashlib
from importlib import import_module
from typing import Any, Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult
from pulumi.output import Unknown

SECRET = "secret"
PROVIDER_KEY = "__provider"


class Driver:
    """How one kind of thing lives. `fields` are its inputs without the secret (plus, after it
    was made, what was read back of it); each method returns the fields as they really are,
    plus any of `outputs` (e.g. the endpoint). `read` returns None when the thing is gone."""

    # Fields a thing that exists cannot change: a new value replaces it ("secret" among them
    # when a changed secret cannot be delivered to the running thing).
    replacing: frozenset[str] = frozenset()
    # Outputs that are read, never declared (they do not take part in the diff).
    outputs: frozenset[str] = frozenset()
    # Fields that guide the making only (a port to start searching at, a default placement):
    # never compared, so a changed hint moves nothing that exists.
    hints: frozenset[str] = frozenset()

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
               if key not in (SECRET, PROVIDER_KEY) and key not in driver.outputs | driver.hints
               and olds.get(key) != value]
    secret = news.get(SECRET)
    if isinstance(secret, Unknown) or digest(secret) != olds.get(SECRET):
        changed.append(SECRET)
    return changed


class ReconciledProvider(ResourceProvider):
    """Delegates each step of a resource's life to the driver named by `driver` ("module:Class")."""

    serialize_as_secret_always = False  # it holds a module path, nothing secret

    def __init__(self, driver: str) -> None:
        super().__init__()
        self.driver = driver

    def _driver(self) -> Driver:
        module, name = self.driver.split(":")
        return getattr(import_module(module), name)()

    @staticmethod
    def _fields(props: dict[str, Any], driver: Driver) -> dict[str, Any]:
        """The declared fields."""
        return {k: v for k, v in props.items() if k not in (SECRET, PROVIDER_KEY) and k not in driver.outputs}

    @staticmethod
    def _known(props: dict[str, Any]) -> dict[str, Any]:
        """Everything known of a thing that exists: its fields and what was read back."""
        return {k: v for k, v in props.items() if k not in (SECRET, PROVIDER_KEY)}

    def create(self, props: dict[str, Any]) -> CreateResult:
        driver = self._driver()
        name = props["name"]
        real = driver.create(name, self._fields(props, driver), props.get(SECRET))
        return CreateResult(id_=name, outs={**self._fields(props, driver), **real, SECRET: digest(props.get(SECRET))})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        driver = self._driver()
        fields = self._fields(props, driver)
        real = driver.read(id_, self._known(props))
        if real is None:
            return ReadResult(None, {})
        outs = {**props, **real}
        drifted = any(outs.get(key) != value for key, value in fields.items() if key not in driver.hints)
        # What was read becomes the inputs the next preview compares the declaration with, so it
        # names the drifted fields (`~ state: "stopped" => "running"`).
        inputs = self._fields(outs, driver) if drifted else None
        return ReadResult(id_, outs, inputs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        driver = self._driver()
        changed = changed_fields(olds, news, driver)
        return DiffResult(
            changes=bool(changed),
            replaces=[key for key in changed if key in driver.replacing],
            delete_before_replace=True,  # names (containers, VMs, ports) are unique
        )

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        driver = self._driver()
        # What was read back (where the thing lives, a port it was given) stays known to the driver.
        known = {key: olds[key] for key in driver.outputs if key in olds}
        real = driver.update(id_, {**known, **self._fields(news, driver)}, news.get(SECRET))
        return UpdateResult(outs={**self._fields(news, driver), **real, SECRET: digest(news.get(SECRET))})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        self._driver().delete(id_, self._known(props))


class Reconciled(Resource, module="agentfleet", name="Reconciled"):
    """A thing made and kept by a driver. Subclasses name the driver (and so the resource type
    a preview shows); `fields` must hold the thing's `name`, which becomes its id."""

    DRIVER: str = ""  # "module:Class"
    OUTPUTS: frozenset[str] = frozenset()

    def __init__(
        self,
        resource_name: str,
        fields: dict[str, Any],
        secret: Optional[pulumi.Input[str]] = None,
        opts: Optional[pulumi.ResourceOptions] = None,
    ) -> None:
        props: dict[str, Any] = {**{key: None for key in self.OUTPUTS}, **fields}
        if secret is not None:
            props[SECRET] = pulumi.Output.secret(secret)
        super().__init__(ReconciledProvider(self.DRIVER), resource_name, props, opts)
