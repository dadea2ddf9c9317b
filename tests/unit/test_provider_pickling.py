"""components/provider_pickling.py: thousands of dynamic providers pickle as the first one did."""

from __future__ import annotations

import pickle

from pulumi.dynamic import dynamic

from components import provider_pickling
from components.provider_pickling import _ORIGINAL_BATCH, keep_pickling_flat
from components.reconciled import ReconciledProvider


def test_the_sdk_alone_nests_a_wrapper_per_provider():
    """What the workaround is for: the SDK leaves its wrapper in place and wraps it next time."""
    before = pickle._Pickler._batch_setitems
    try:
        provider_pickling._sdk_serialize(ReconciledProvider("m:D"))
        once = pickle._Pickler._batch_setitems
        provider_pickling._sdk_serialize(ReconciledProvider("m:D"))
        assert pickle._Pickler._batch_setitems is not once  # one more wrapper around the last
    finally:
        pickle._Pickler._batch_setitems = before


def test_two_thousand_providers_pickle_without_nesting():
    keep_pickling_flat()
    first = dynamic.serialize_provider(ReconciledProvider("components.backends.docker_engine:ContainerDriver"))
    for _ in range(2000):
        last = dynamic.serialize_provider(ReconciledProvider("components.backends.docker_engine:ContainerDriver"))
    assert last == first
    assert pickle._Pickler._batch_setitems is _ORIGINAL_BATCH
