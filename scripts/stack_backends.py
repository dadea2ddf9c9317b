"""Print the backends a stack file's fleet uses, space-separated: `scripts/setup --stack NAME`
installs only those. Usage: python scripts/stack_backends.py stacks/Pulumi.<stack>.yaml"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from components.project import fleet_config_key  # noqa: E402  (needs the project on sys.path)
from components.spec import declared_backends  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        print(f"error: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    config = document.get("config") if isinstance(document, dict) else None
    key = fleet_config_key()
    fleet = config.get(key) if isinstance(config, dict) else None
    backends = declared_backends(fleet)
    if not backends:
        print(f"error: {path} has no `{key}` with agents (see stacks/Pulumi.dev.yaml)", file=sys.stderr)
        return 1
    print(" ".join(backends))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
