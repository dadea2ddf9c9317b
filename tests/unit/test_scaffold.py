"""`agentfleet new`: the files a team commits, the pin, and what it refuses before writing anything."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from agentfleet import __version__
from agentfleet.cli import main
from agentfleet.errors import UsageError
from agentfleet.scaffold import scaffold


def test_a_python_project_pins_this_version_and_takes_the_plugin_from_its_virtualenv(tmp_path: Path):
    out = io.StringIO()
    assert main(["new", str(tmp_path / "team-fleet")], stdout=out) == 0
    project = tmp_path / "team-fleet"
    assert sorted(p.name for p in project.iterdir()) == [".gitignore", "Pulumi.dev.yaml", "Pulumi.yaml", "README.md",
                                                        "__main__.py", "requirements.txt"]
    assert (project / "requirements.txt").read_text() == f"agentfleet=={__version__}\n"
    pulumi = yaml.safe_load((project / "Pulumi.yaml").read_text())
    assert pulumi["name"] == "team-fleet"
    assert pulumi["runtime"] == {"name": "python", "options": {"virtualenv": "venv"}}
    assert pulumi["plugins"] == {"providers": [{"name": "agentfleet", "path": "venv/bin"}]}
    fleet = yaml.safe_load((project / "Pulumi.dev.yaml").read_text())["config"]["team-fleet:fleet"]
    assert [a["name"] for a in fleet["agents"]] == ["agent-1", "agent-2"] and fleet["defaults"]["backend"] == "docker"
    compile((project / "__main__.py").read_text(), "__main__.py", "exec")
    assert {"/venv/", ".agentfleet/", ".pulumi-state/"} <= set((project / ".gitignore").read_text().split())


def test_a_yaml_project_is_one_fleet_resource_and_no_code(tmp_path: Path):
    scaffold(tmp_path / "ops", yaml=True)
    pulumi = yaml.safe_load((tmp_path / "ops" / "Pulumi.yaml").read_text())
    assert pulumi["runtime"] == "yaml" and not (tmp_path / "ops" / "__main__.py").exists()
    assert pulumi["resources"] == {"agentfleet": {"type": "agentfleet:index:Fleet", "properties": {"fleet": "${fleet}"}}}
    assert pulumi["outputs"] == {"agents": "${agentfleet.agents}", "agent_private_keys": "${agentfleet.agentPrivateKeys}"}


@pytest.mark.parametrize("name, said", [("agentfleet", "agentfleet's config namespace"), ("my fleet", "letters, digits")])
def test_a_name_pulumi_or_the_provider_would_trip_on_is_refused_before_anything_is_written(tmp_path, name, said):
    with pytest.raises(UsageError, match=said):
        scaffold(tmp_path / "new", name=name)
    assert not (tmp_path / "new").exists()


def test_a_directory_with_anything_in_it_is_left_alone(tmp_path: Path):
    (tmp_path / "Pulumi.yaml").write_text("name: theirs\n")
    err = io.StringIO()
    assert main(["new", str(tmp_path)], stderr=err) == 2
    assert "not an empty directory" in err.getvalue()
    assert (tmp_path / "Pulumi.yaml").read_text() == "name: theirs\n"
