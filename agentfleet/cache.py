"""A stack's outputs kept in the project (.agentfleet/<stack>/outputs.json) between CLI calls.

`pulumi stack output` costs a third of a second a call; the outputs change only when the stack's
state does. So they are kept with the state file's identity (path, mtime, size) and reused while
it is unchanged: `pulumi up`, `refresh` or `destroy` rewrite the state, and the next call reads
the outputs afresh. Only file backends (PULUMI_BACKEND_URL=file://…, what scripts/activate sets)
have a state file to watch; with any other backend nothing is cached. The file holds the agents'
private keys: mode 0600 in a 0700 directory, written whole (rename) so no reader sees a part.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

CACHE_NAME = "outputs.json"
_PROJECT_NAME = re.compile(r"^name:\s*['\"]?([^'\"\s#]+)", re.MULTILINE)


def state_file(backend_url: str | None, project_dir: Path, stack: str) -> Path | None:
    """Where a file backend keeps the stack's state (None: not a file backend, or not found).

    Pulumi's layout: <root>/.pulumi/stacks/<project>/<stack>.json (.gz when compressed); stacks
    of old backends sit directly in stacks/. `stack` may be qualified: [org/]project/stack.
    """
    if not backend_url or not backend_url.startswith("file://"):
        return None
    root = Path(os.path.expanduser(backend_url.removeprefix("file://").split("?", 1)[0]))
    parts = stack.split("/")
    project = parts[-2] if len(parts) > 1 else _project_name(project_dir)
    stacks = root / ".pulumi" / "stacks"
    candidates = [stacks / project / parts[-1]] if project else []
    candidates.append(stacks / parts[-1])
    for base in candidates:
        for suffix in (".json", ".json.gz"):
            path = base.with_name(base.name + suffix)
            if path.is_file():
                return path
    return None


def _project_name(project_dir: Path) -> str | None:
    try:
        found = _PROJECT_NAME.search((project_dir / "Pulumi.yaml").read_text(encoding="utf-8"))
    except OSError:
        return None
    return found.group(1) if found else None


def state_key(backend_url: str | None, project_dir: Path, stack: str) -> str | None:
    """What changes whenever the stack's state does (None: nothing to watch, do not cache)."""
    path = state_file(backend_url, project_dir, stack)
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    return f"{path}:{stat.st_mtime_ns}:{stat.st_size}"


def read_cached(directory: Path, key: str) -> object | None:
    """The outputs kept under key, or None if there are none or they belong to another state."""
    try:
        kept = json.loads((directory / CACHE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or kept.get("key") != key:
        return None
    return kept.get("outputs")


def write_cached(directory: Path, key: str, outputs: object) -> None:
    """Keep outputs under key; a failure to write costs only speed, so it is ignored."""
    partial = directory / f".{CACHE_NAME}.{os.getpid()}"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump({"key": key, "outputs": outputs}, file)
        partial.replace(directory / CACHE_NAME)
    except OSError:
        partial.unlink(missing_ok=True)
