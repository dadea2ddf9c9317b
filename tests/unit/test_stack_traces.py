"""components/stack_traces.py: resources are registered without the program's call stack."""

from pulumi.runtime import resource

from components.stack_traces import omit_stack_traces


def test_the_pinned_sdk_collects_frames_and_after_the_switch_none(monkeypatch):
    monkeypatch.setattr(resource, "_get_stack_trace", resource._get_stack_trace)  # restored afterwards

    class Resource:  # the collector skips three __init__ frames: the SDK's and the resource's
        def __init__(self):
            self.trace = Outer()

    class Outer:
        def __init__(self):
            self.trace = Inner().trace

    class Inner:
        def __init__(self):
            self.trace = resource._get_stack_trace()

    assert Resource().trace.trace.frames  # what the engine would store in state
    assert omit_stack_traces()
    assert not Resource().trace.trace.frames
    assert resource._get_source_position(resource._get_stack_trace()) is None


def test_an_sdk_without_the_collector_is_left_alone(monkeypatch):
    monkeypatch.delattr(resource, "_get_stack_trace")
    assert omit_stack_traces() is False
