"""The tag of the agent image, derived from its recipe.

Why a content tag: the image is built locally from images/ (there is no registry to pull it
from), and a changed recipe (Dockerfile, agent-init, cloud-init config, seed script) must both
rebuild the image and replace the agents running the old one. A tag that is a hash of every file
under images/ does both: scripts/setup builds the image when no image has the tag yet, and a
container whose image tag changed is replaced by Pulumi. An unchanged recipe keeps its tag, so
nothing is rebuilt or replaced.

`python -m components.image` prints the tag.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"
REPOSITORY = "agentfleet/agent"


def ignored_prefixes(images_dir: Path) -> tuple[str, ...]:
    """Directory prefixes in images/.dockerignore: outside the build context, outside the tag."""
    ignore = images_dir / ".dockerignore"
    lines = ignore.read_text().splitlines() if ignore.exists() else []
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def agent_image_tag(images_dir: Path = IMAGES_DIR) -> str:
    """`agentfleet/agent:<12 hex>`: sha256 over the sorted relative paths and contents of every
    file of the build context under `images_dir` (each length-prefixed, so no two file sets
    hash alike)."""
    images_dir = Path(images_dir)
    ignored = ignored_prefixes(images_dir)
    files = sorted(
        (path.relative_to(images_dir).as_posix(), path)
        for path in images_dir.rglob("*")
        if path.is_file() and not path.relative_to(images_dir).as_posix().startswith(ignored)
    )
    if not files:
        raise FileNotFoundError(f"no image recipe under {images_dir}")
    digest = hashlib.sha256()
    for relative, path in files:
        for part in (relative.encode(), path.read_bytes()):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return f"{REPOSITORY}:{digest.hexdigest()[:12]}"


if __name__ == "__main__":
    print(agent_image_tag())
