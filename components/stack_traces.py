"""Keep the program's call stacks out of the stack's state.

Why: since Pulumi v3.195 the engine stores, with every resource, the program's call stack at the
moment it was declared (pulumi/pulumi#20430). From agentfleet's program that is about 17 frames
of SDK, asyncio and launcher paths: 1.7 KB per resource in `pulumi stack export`, five resources
per agent, the largest single part of an agent's state; and the file backend rewrites the whole
state at every step of an `up`. Nothing reads them here (they serve Pulumi Cloud's console). The
Python SDK has no switch for them, so its frame collector is replaced by one that reports no
frame, which the engine stores as none. An SDK without that function is left as it is (the
state is larger, nothing else changes); tests/unit/test_stack_traces.py notices that.
"""

from __future__ import annotations

from pulumi.runtime import resource as _resource
from pulumi.runtime.proto import source_pb2


def _no_frames() -> source_pb2.StackTrace:
    return source_pb2.StackTrace()


def omit_stack_traces() -> bool:
    """Register every later resource without its call stack; False if this SDK cannot."""
    if not callable(getattr(_resource, "_get_stack_trace", None)):
        return False
    _resource._get_stack_trace = _no_frames
    return True
