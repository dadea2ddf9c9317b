"""Benchmark results -> report.json and a Markdown table per benchmark."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def markdown(result: dict[str, Any]) -> str:
    rows = result["results"]
    columns = list(rows[0])
    lines = [f"### {result['benchmark']}", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    extra = {k: v for k, v in result.items() if k not in ("benchmark", "results")}
    return "\n".join(lines + ["", ", ".join(f"{k}: `{v}`" for k, v in extra.items()), ""])


def write_reports(results: list[dict[str, Any]], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(),
               "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (directory / "report.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    header = f"Measured {machine['when']} on {machine['cpus']} cores.\n\n"
    (directory / "report.md").write_text(header + "\n".join(markdown(r) for r in results))
