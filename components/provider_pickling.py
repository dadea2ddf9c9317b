"""Keep Pulumi's dynamic-provider serialisation from nesting one wrapper per resource.

Why: the Python SDK's `serialize_provider` (pulumi/dynamic/dynamic.py) sorts dictionaries while
it pickles a provider by replacing `pickle._Pickler._batch_setitems` with a wrapper of whatever
is there, and never puts the original back. Each dynamic resource wraps the previous wrapper, so
pickling nests one call deeper per resource; past about 950 resources (some 190 agents, five
dynamic resources each) every new one fails with RecursionError. Restoring the original after
each call keeps the SDK's sorting and the nesting at one.
"""

from __future__ import annotations

import pickle
from typing import Any

from pulumi.dynamic import dynamic as _dynamic

_ORIGINAL_BATCH = pickle._Pickler._batch_setitems  # type: ignore[attr-defined]
_sdk_serialize = _dynamic.serialize_provider


def _serialize_flat(provider: Any) -> str:
    try:
        return _sdk_serialize(provider)
    finally:
        pickle._Pickler._batch_setitems = _ORIGINAL_BATCH  # type: ignore[attr-defined]


def keep_pickling_flat() -> None:
    """From now on, every dynamic resource's provider is pickled one level deep."""
    _dynamic.serialize_provider = _serialize_flat
