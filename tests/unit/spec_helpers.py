"""Small builders for fleet configs in the spec tests."""

from __future__ import annotations

import pytest

from components.spec import FleetConfigError, FleetSpec, load_fleet


def agent(name: str = "agent-1", **fields) -> dict:
    return {"name": name, "identity": {"name": name.title(), "email": f"{name}@example.com"}, **fields}


def load(raw, secrets=None) -> FleetSpec:
    return load_fleet("test", raw, (secrets or {}).get)


def problems(raw, secrets=None) -> list[str]:
    with pytest.raises(FleetConfigError) as caught:
        load(raw, secrets)
    return caught.value.problems
