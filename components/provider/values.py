"""Between the engine's property values and the plain values drivers work with.

Why by hand: drivers compare and store plain JSON-like values (ints for ports and limits), while
the wire knows only floats, and marks secrets and values not known yet (a preview).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi.provider.experimental.property_value import Computed, PropertyValue

from components.reconciled import UNKNOWN


def plain(value: PropertyValue) -> Any:
    """The value without its wrappers: secrets opened, integral numbers as ints, unknowns as UNKNOWN."""
    inner = value.value
    if isinstance(inner, Computed):
        return UNKNOWN
    if isinstance(inner, Mapping):
        return {key: plain(item) for key, item in inner.items()}
    if isinstance(inner, tuple):
        return [plain(item) for item in inner]
    if isinstance(inner, float) and inner.is_integer():
        return int(inner)
    return inner


def plain_map(values: Mapping[str, PropertyValue]) -> dict[str, Any]:
    return {key: plain(value) for key, value in values.items()}


def wrapped(value: Any, secret: bool = False) -> PropertyValue:
    """A plain value as the engine takes it."""
    if isinstance(value, Mapping):
        return PropertyValue({str(key): wrapped(item) for key, item in value.items()}, is_secret=secret)
    if isinstance(value, (list, tuple)):
        return PropertyValue([wrapped(item) for item in value], is_secret=secret)
    if isinstance(value, int) and not isinstance(value, bool):
        return PropertyValue(float(value), is_secret=secret)
    return PropertyValue(value, is_secret=secret)


def wrapped_map(values: Mapping[str, Any], secrets: frozenset[str] = frozenset()) -> dict[str, PropertyValue]:
    return {key: wrapped(value, key in secrets) for key, value in values.items()}
