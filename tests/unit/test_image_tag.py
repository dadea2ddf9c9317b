"""components/image.py: the agent image tag follows the Docker build context, and only it."""

from pathlib import Path

from components.image import agent_image_tag


def recipe(tmp_path: Path) -> Path:
    (tmp_path / "lima").mkdir()
    (tmp_path / "Dockerfile").write_text("FROM debian\n")
    (tmp_path / "agent-init").write_text("#!/bin/sh\n")
    (tmp_path / "lima" / "build-vm-image").write_text("#!/bin/sh\n")
    (tmp_path / ".dockerignore").write_text("# not in the context\nlima/\n")
    return tmp_path


def test_a_changed_recipe_file_changes_the_tag(tmp_path):
    images = recipe(tmp_path)
    before = agent_image_tag(images)
    (images / "agent-init").write_text("#!/bin/sh\necho changed\n")
    assert agent_image_tag(images) != before
    assert before.startswith("agentfleet/agent:") and len(before.split(":")[1]) == 12


def test_files_outside_the_build_context_leave_the_tag_alone(tmp_path):
    images = recipe(tmp_path)
    before = agent_image_tag(images)
    (images / "lima" / "build-vm-image").write_text("#!/bin/sh\necho vm\n")
    assert agent_image_tag(images) == before
