"""Benchmark results -> report.json, a Markdown table per benchmark, and one PNG chart.

A run that measured only some benchmarks replaces their results and keeps the others' from the
previous report.json; each result says when it was measured and under what load.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ORDER = ("provisioning", "provider", "readiness", "pool", "no_change_update", "footprint", "scale", "state", "exec_latency", "overlaps", "kubernetes")


def markdown(result: dict[str, Any]) -> str:
    rows = result["results"]
    columns = list(dict.fromkeys(column for row in rows for column in row))
    lines = [f"### {result['benchmark']}", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    extra = {k: v for k, v in result.items() if k not in ("benchmark", "results", "aims")}
    return "\n".join(lines + ["", ", ".join(f"{k}: `{v}`" for k, v in extra.items()), ""])


def aims_table(results: list[dict[str, Any]]) -> str:
    """Every aim the benchmarks checked, met or not, with when it was measured and how."""
    rows = [(a, r) for r in results for a in r.get("aims", [])]
    if not rows:
        return ""
    lines = ["### aims", "", "| aim | measured | limit | met | from | measured at | command |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {a['aim']} | {a['measured']} | {a['limit']} | {'yes' if a['met'] else 'no'} | {a.get('detail', '')} "
              f"| {r.get('measured', '')} | `{a['command']}` |" for a, r in rows]
    return "\n".join(lines) + "\n"


def merged(previous: Path, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """These results, plus the previous report's results of benchmarks not run this time."""
    kept = []
    if previous.exists():
        try:
            kept = json.loads(previous.read_text()).get("results", [])
        except (ValueError, AttributeError):
            kept = []
    fresh = {r["benchmark"] for r in results}
    combined = [r for r in kept if r.get("benchmark") not in fresh] + results
    return sorted(combined, key=lambda r: ORDER.index(r["benchmark"]) if r["benchmark"] in ORDER else len(ORDER))


def write_reports(results: list[dict[str, Any]], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    when = datetime.now(UTC).isoformat(timespec="seconds")
    for result in results:
        result.setdefault("measured", when)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "when": when}
    results = merged(directory / "report.json", results)
    (directory / "report.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    header = (f"Written {when} on {machine['cpus']} cores; each table says when it was measured and the "
              "1-minute load average meanwhile (other work on the machine).\n\n")
    (directory / "report.md").write_text(header + aims_table(results) + "\n" + "\n".join(markdown(r) for r in results))
    chart(results, directory / "report.png")


def chart(results: list[dict[str, Any]], path: Path) -> None:
    """One figure, a panel per benchmark present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_name = {r["benchmark"]: r for r in results}
    panels = [name for name in ORDER if name in by_name]
    if not panels:
        return
    columns = min(3, len(panels))
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4.2 * rows), squeeze=False)
    for axis in axes.flat[len(panels):]:
        axis.set_visible(False)
    for axis, name in zip(axes.flat, panels):
        PANELS[name](axis, by_name[name])
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(f"agentfleet benchmarks ({os.cpu_count()} cores)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _provisioning(axis: Any, result: dict[str, Any]) -> None:
    _by_size(axis, result["results"])
    axis.set_title("Provisioning a fresh fleet")


def _kubernetes(axis: Any, result: dict[str, Any]) -> None:
    _by_size(axis, result["results"])
    axis.set_title("Kubernetes pods vs Docker containers")


def _by_size(axis: Any, rows: list[dict[str, Any]]) -> None:
    """Bars of each way's median, grouped by fleet size."""
    sizes = sorted({r["agents"] for r in rows})
    ways = list(dict.fromkeys(r["way"] for r in rows))
    width = 0.8 / len(ways)
    for i, way in enumerate(ways):
        values = [next(r["median_s"] for r in rows if r["agents"] == s and r["way"] == way) for s in sizes]
        bars = axis.bar([x + i * width for x in range(len(sizes))], values, width, label=way)
        axis.bar_label(bars, fmt="%.1f", fontsize=7)
    axis.set_xticks([x + width * (len(ways) - 1) / 2 for x in range(len(sizes))], [f"{s} agents" for s in sizes])
    axis.set_ylabel("seconds until every agent answers git (median)")
    axis.legend(fontsize=8)


def _pool(axis: Any, result: dict[str, Any]) -> None:
    rows = result["results"]
    axis.bar([r["way"] for r in rows], [r["median_s"] for r in rows])
    axis.set_ylabel("seconds until every agent answers git (median)")
    axis.set_title(f"{rows[0]['agents']} agents claimed from a warm pool")
    axis.tick_params(axis="x", labelsize=7)


def _readiness(axis: Any, result: dict[str, Any]) -> None:
    after_start = result.get("after_start")  # the phases that make up `total`
    phases = [r for r in result["results"] if r["phase"] != "total" and (after_start is None or r["phase"] in after_start)]
    left = 0.0
    for row in phases:
        axis.barh([0], [row["median_s"]], left=left, label=row["phase"])
        left += row["median_s"]
    total = next(r["median_s"] for r in result["results"] if r["phase"] == "total")
    axis.set_yticks([0], [f"total {total:.2f} s"])
    axis.set_xlabel("seconds from docker start (medians)")
    axis.set_title("Readiness of one agent")
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)


def _bars(axis: Any, labels: list[str], values: list[float], fmt: str, ylabel: str, title: str,
          label_size: int = 8) -> None:
    """One labelled bar per row: the shape of most panels."""
    bars = axis.bar(range(len(values)), values)
    axis.bar_label(bars, fmt=fmt, fontsize=8)
    axis.set_xticks(range(len(values)), labels, fontsize=label_size)
    axis.set_ylabel(ylabel)
    axis.set_title(title)


def _update(axis: Any, result: dict[str, Any]) -> None:
    rows = result["results"]
    _bars(axis, [r["command"].replace(" --", "\n--") for r in rows], [r["median_s"] for r in rows], "%.1f",
          "seconds (median)", f"No-change update, {result['agents']} agents", label_size=7)


def _footprint(axis: Any, result: dict[str, Any]) -> None:
    rows, repo = result["results"], result.get("repository", {})
    _bars(axis, [r["way"] for r in rows], [r["per_agent_mib"] for r in rows], "%.1f", "MiB of disk per agent",
          f"Disk per agent ({repo.get('commits')} commits, {repo.get('files')} files)")


def _scale(axis: Any, result: dict[str, Any]) -> None:
    rows = [r for r in result["results"] if r.get("ok")]
    if rows:
        axis.plot([r["agents"] for r in rows], [r["up_s"] for r in rows], marker="o", label="pulumi up, ready")
        axis.plot([r["agents"] for r in rows], [r["destroy_s"] for r in rows], marker="s", label="pulumi destroy")
        axis.legend(fontsize=8)
    axis.set_xlabel("agents")
    axis.set_ylabel("seconds")
    axis.set_title(f"Scale (largest with every agent answering: {result['largest_ok']})")


def _exec_latency(axis: Any, result: dict[str, Any]) -> None:
    rows = result["results"]
    _bars(axis, [r["way"].replace(" (", "\n(") for r in rows], [r["median_ms"] for r in rows], "%.0f", "ms (median)",
          "Warm `git status` round trip")


def _provider(axis: Any, result: dict[str, Any]) -> None:
    rows = result["results"]
    _bars(axis, [r["way"].replace(", ", ",\n") for r in rows], [r["median_s"] for r in rows], "%.1f",
          "s (median) until every agent answers", f"{rows[0]['agents']} agents: provider plugin, 0.1, PoC")


def _overlaps(axis: Any, result: dict[str, Any]) -> None:
    """Seconds against agents: a line per way and repository size."""
    rows = result["results"]
    for files, way in dict.fromkeys((r["files"], r["way"]) for r in rows):
        mine = [r for r in rows if r["files"] == files and r["way"] == way]
        axis.plot([r["agents"] for r in mine], [r["median_s"] for r in mine], marker="o", label=f"{way}, {files} files")
    axis.set_xlabel("agents")
    axis.set_ylabel("seconds (median)")
    axis.set_title("Overlaps: who changes what, what conflicts")
    axis.legend(fontsize=7)


def _state(axis: Any, result: dict[str, Any]) -> None:
    rows = result["results"]
    _bars(axis, [r["resource"] for r in rows], [r["kb"] for r in rows], "%.1f", "kB in `pulumi stack export`",
          f"State of one more agent: {result['per_agent_kb']:.1f} kB", label_size=7)


PANELS = {"provisioning": _provisioning, "provider": _provider, "readiness": _readiness, "pool": _pool, "no_change_update": _update,
          "footprint": _footprint, "scale": _scale, "state": _state, "exec_latency": _exec_latency,
          "overlaps": _overlaps, "kubernetes": _kubernetes}
