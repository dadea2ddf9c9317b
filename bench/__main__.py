"""`python -m bench` (or `make bench`): bring up a throwaway stack, measure, write the reports.

Reports go to bench/results/: report.json (every figure) and report.md (the table in README).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import uuid
from pathlib import Path

from bench import exec_latency
from bench.report import write_reports
from tests.e2e.support import FleetStack

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "components", "cloud-init", "images")
RESULTS = Path(__file__).resolve().parent / "results"


def project_copy() -> Path:
    copy = Path(tempfile.mkdtemp(prefix="agentfleet-bench-project-"))
    for name in PROJECT_FILES:
        source = PROJECT_ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy / name)
    (copy / "stacks").mkdir()
    (copy / "state").mkdir()
    return copy


def one_agent_fleet() -> dict:
    return {"agents": [{"name": "bench-1", "identity": {"name": "Bench", "email": "bench@example.com"}}]}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--rounds", type=int, default=50, help="measurements per way (default 50)")
    args = parser.parse_args()
    stack = FleetStack(project_copy(), f"bench-{uuid.uuid4().hex[:6]}")
    try:
        stack.set_fleet(one_agent_fleet())
        outputs = stack.up()
        results = [exec_latency.run(outputs, stack.name, args.rounds)]
    finally:
        stack.destroy()
        stack.remove()
    write_reports(results, RESULTS)
    print((RESULTS / "report.md").read_text())


if __name__ == "__main__":
    main()
