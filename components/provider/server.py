"""agentfleet's resource provider: the machines, volumes, networks and key pairs of a fleet as
typed resources (`agentfleet:index:<Kind>`, components/provider/kinds.py), and the Fleet
component through construct, so any Pulumi program (Python, YAML, ...) can declare a fleet.

Why a plugin of its own (not Pulumi's dynamic providers): nothing is pickled into the state, the
schema says what each resource is, and operations run side by side up to the engine's
`--parallel`: each one hands its blocking driver call to a thread pool far larger than any
parallelism the engine asks for, so the engine, not the provider, sets the pace.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

import pulumi
from pulumi.errors import InputPropertyError
from pulumi.provider.experimental.property_value import PropertyValue
from pulumi.runtime.rpc import UNKNOWN
from pulumi.provider.experimental.provider import (
    CheckRequest,
    CheckResponse,
    ConfigureRequest,
    ConfigureResponse,
    ConstructRequest,
    ConstructResponse,
    CreateRequest,
    CreateResponse,
    DeleteRequest,
    DiffRequest,
    DiffResponse,
    GetSchemaRequest,
    GetSchemaResponse,
    PropertyDiff,
    PropertyDiffKind,
    Provider,
    ReadRequest,
    ReadResponse,
    UpdateRequest,
    UpdateResponse,
)

from components.provider.kinds import driver
from components.provider.schema import FLEET, schema_json
from components.provider.values import plain, plain_map, wrapped, wrapped_map
from components.reconciled import Outcome, Reconciler

T = TypeVar("T")
# Threads are made as operations arrive; the engine's --parallel bounds how many do at once.
WORKERS = 1024
# The provider config keys the engine itself sets.
ENGINE_KEYS = frozenset({"version", "pluginDownloadURL", "__internal"})


def _kind(type_token: str) -> str:
    return type_token.rsplit(":", 1)[-1]


class AgentfleetProvider(Provider):
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="agentfleet-op")

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, call, *args)

    @staticmethod
    def _reconciler(type_token: str) -> Reconciler:
        return Reconciler(driver(_kind(type_token)))

    @staticmethod
    def _properties(reconciler: Reconciler, outcome: Outcome) -> dict[str, PropertyValue]:
        return wrapped_map(outcome.outs, reconciler.driver.secret_outputs)

    async def get_schema(self, request: GetSchemaRequest) -> GetSchemaResponse:
        return GetSchemaResponse(schema_json())

    async def check_config(self, request: CheckRequest) -> CheckResponse:
        # The provider has no settings of its own: only the engine's own keys are kept, so config
        # a project keeps in the `agentfleet:` namespace never enters the provider's state.
        return CheckResponse(inputs={key: value for key, value in request.new_inputs.items()
                                     if key in ENGINE_KEYS})

    async def diff_config(self, request: DiffRequest) -> DiffResponse:
        # Nothing to configure, so nothing to change: a new version (an upgrade) replaces no resource.
        return DiffResponse(changes=False)

    async def configure(self, request: ConfigureRequest) -> ConfigureResponse:
        # No preview of create or update: a preview shows the declared inputs, outputs unknown.
        return ConfigureResponse(accept_secrets=True, supports_preview=False, accept_outputs=True)

    async def check(self, request: CheckRequest) -> CheckResponse:
        return CheckResponse(inputs=request.new_inputs)

    async def diff(self, request: DiffRequest) -> DiffResponse:
        reconciler = self._reconciler(request.type)
        plan = reconciler.diff(plain_map(request.old_state), plain_map(request.new_inputs))
        return DiffResponse(
            changes=plan.changes,
            replaces=plan.replaces,
            delete_before_replace=plan.delete_before_replace,
            diffs=plan.changed,
            detailed_diff={key: PropertyDiff(PropertyDiffKind.UPDATE_REPLACE if key in plan.replaces
                                             else PropertyDiffKind.UPDATE, input_diff=True)
                           for key in plan.changed},
        )

    async def create(self, request: CreateRequest) -> CreateResponse:
        reconciler = self._reconciler(request.type)
        outcome = await self._run(reconciler.create, plain_map(request.properties))
        return CreateResponse(outcome.id, self._properties(reconciler, outcome))

    async def read(self, request: ReadRequest) -> ReadResponse:
        reconciler = self._reconciler(request.type)
        outcome = await self._run(reconciler.read, request.resource_id, plain_map(request.properties))
        if outcome.id is None:
            return ReadResponse()  # gone: the engine drops it from the state
        inputs = wrapped_map(outcome.inputs) if outcome.inputs is not None else request.inputs
        return ReadResponse(outcome.id, self._properties(reconciler, outcome), inputs)

    async def update(self, request: UpdateRequest) -> UpdateResponse:
        reconciler = self._reconciler(request.type)
        outcome = await self._run(reconciler.update, request.resource_id, plain_map(request.olds),
                                  plain_map(request.news))
        return UpdateResponse(self._properties(reconciler, outcome))

    async def delete(self, request: DeleteRequest) -> None:
        reconciler = self._reconciler(request.type)
        await self._run(reconciler.delete, request.resource_id, plain_map(request.properties))

    async def construct(self, request: ConstructRequest) -> ConstructResponse:
        from components.program import declare_fleet
        from components.spec import FleetConfigError

        if request.resource_type != FLEET:
            raise ValueError(f"agentfleet has no component {request.resource_type} (it has {FLEET})")
        config = request.inputs.get("fleet")
        try:
            fleet = declare_fleet(request.name, None if config is None else plain(config), request.options)
        except FleetConfigError as error:
            raise InputPropertyError("fleet", str(error)) from None
        return ConstructResponse(
            urn=await fleet.urn.future(),
            state={"agents": await _settled(fleet.agents), "agentPrivateKeys": await _settled(fleet.agent_private_keys)},
            state_dependencies={},
        )


async def _settled(output: pulumi.Output[Any]) -> PropertyValue:
    """An output's value once known (after `up`); unknown in a preview, as the engine's unknown
    sentinel: the SDK (3.272) cannot marshal PropertyValue.computed() into a construct response."""
    if not await output.is_known():
        return PropertyValue(UNKNOWN)
    return wrapped(await output.future(), secret=await output.is_secret())
