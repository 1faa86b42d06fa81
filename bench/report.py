"""Turning the runs' JSON into the results table, the latency plot and the README section."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import percentile
from bench.systems import SYSTEMS

README = Path(__file__).with_name("README.md")
START, END = "<!-- last-results:start -->", "<!-- last-results:end -->"


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    higher_is_better: bool


MEASURES = (
    Measure("enqueue_msgs_s", "enqueue, one producer, msgs/s", True),
    Measure("batch_enqueue_msgs_s", "batch enqueue (send_many, 1,000 per round trip), msgs/s", True),
    Measure("drain_tasks_s", "drain of {messages:,} no-op tasks (200-byte payload), tasks/s", True),
    Measure("state_p50_ms", "state task start under {backlog:,} waiting 10 ms bulk tasks, p50 ms", False),
    Measure("state_p99_ms", "state task start under {backlog:,} waiting 10 ms bulk tasks, p99 ms", False),
    Measure("idle_p50_ms", "send to start on an idle worker ({idle_sends} sends 0-0.8 s apart), p50 ms", False),
    Measure("idle_p99_ms", "send to start on an idle worker, p99 ms", False),
    Measure("idle_cpu_pct", "idle worker over {idle_seconds:g} s, % of a core", False),
    Measure("idle_redis_cmds_s", "idle worker, Redis commands/s", False),
    Measure("drain_rss_mib", "worker RSS after the drain, MiB", False),
    Measure("drain_pss_mib", "worker PSS after the drain, MiB", False),
    Measure("mem_plain_rss_mib", "prefork -c 2 RSS after {memory_tasks:,} tasks, MiB", False),
    Measure("mem_plain_pss_mib", "prefork -c 2 PSS after {memory_tasks:,} tasks, MiB", False),
    Measure("mem_mtpc_rss_mib", "... with --max-tasks-per-child={max_tasks_per_child}, RSS MiB", False),
    Measure("mem_mtpc_pss_mib", "... with --max-tasks-per-child={max_tasks_per_child}, PSS MiB", False),
    Measure("app_worker_rss_mib", "full application worker (2 proc x 8 thr) after end to end, RSS MiB", False),
    Measure("app_worker_pss_mib", "full application worker after end to end, PSS MiB", False),
    Measure("web_rate", "POST /webhook, wrk at {web_rate} req/s for {web_seconds} s: achieved req/s", True),
    Measure("web_p50_ms", "POST /webhook p50 ms", False),
    Measure("web_p99_ms", "POST /webhook p99 ms", False),
    Measure("web_max_ms", "POST /webhook max ms", False),
    Measure("web_errors", "POST /webhook errors (non-2xx, socket errors, timeouts)", False),
    Measure("e2e_p50_ms", "end to end, inbound message to reply at the stand-in, p50 ms", False),
    Measure("e2e_p99_ms", "end to end, p99 ms", False),
)


def derive(result: dict[str, Any]) -> dict[str, Any]:
    """The run's scalar measures, percentiles taken from its latency lists."""
    out = dict(result)
    for name in ("idle", "state"):
        values = result.get(f"{name}_latencies_ms")
        if values:
            out[f"{name}_p50_ms"] = percentile(values, 50)
            out[f"{name}_p99_ms"] = percentile(values, 99)
    return out


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    magnitude = abs(value)
    if value == int(value) and magnitude < 100:
        return str(int(value))
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cell(values: list[float]) -> str:
    if not values:
        return "n/a"
    median = statistics.median(values)
    if len(values) == 1:
        return _fmt(median)
    return f"{_fmt(median)} ({_fmt(min(values))}-{_fmt(max(values))})"


def _ratio_cell(ratios: list[float]) -> str:
    median = statistics.median(ratios)
    if len(ratios) == 1:
        return f"{median:.2f}x"
    return f"{median:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def pairs(systems: list[str]) -> list[tuple[str, str]]:
    """(this project's system, peer) pairs to take ratios of: ``ours`` against every peer, and
    the facade's prefork and threads shapes against Celery's same shape."""
    found = [("ours", p) for p in systems if "ours" in systems and SYSTEMS[p].family != "ours"]
    for ours, peer in (("ours-prefork", "celery-prefork"), ("ours-threads", "celery-threads")):
        if ours in systems and peer in systems:
            found.append((ours, peer))
    return found


def summarize(runs: list[list[dict[str, Any]]], systems: list[str]) -> dict[str, Any]:
    """Per measure and system: the values of every run, median, min and max; per peer:
    the ratio of this project to the peer, run i against run i."""
    summary: dict[str, Any] = {}
    for measure in MEASURES:
        row: dict[str, Any] = {"values": {}, "ratios": {}}
        per_system: dict[str, list[float | None]] = {}
        for system in systems:
            values = []
            for run in runs:
                found = next((r for r in run if r.get("system") == system), None)
                value = derive(found).get(measure.key) if found else None
                values.append(float(value) if value is not None else None)
            per_system[system] = values
            present = [v for v in values if v is not None]
            if present:
                row["values"][system] = {"runs": values, "median": statistics.median(present),
                                         "min": min(present), "max": max(present)}
        for ours, peer in pairs(systems):
            ratios = [a / b for a, b in zip(per_system[ours], per_system[peer], strict=True)
                      if a is not None and b is not None and b != 0]
            if ratios:
                row["ratios"][f"{ours}/{peer}"] = {"runs": ratios, "median": statistics.median(ratios),
                                                   "min": min(ratios), "max": max(ratios)}
        if row["values"]:
            summary[measure.key] = row
    return summary


def table(summary: dict[str, Any], systems: list[str], scale: dict[str, Any]) -> str:
    """The markdown table: median (min-max) per system, then this project / each peer."""
    ratio_pairs = pairs(systems)
    head = ["measure"] + [SYSTEMS[s].label for s in systems] + [f"{a} / {b}" for a, b in ratio_pairs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for measure in MEASURES:
        row = summary.get(measure.key)
        if row is None:
            continue
        cells = [measure.label.format(**scale) + (" (higher is better)" if measure.higher_is_better else "")]
        for system in systems:
            v = row["values"].get(system)
            cells.append(_cell([x for x in v["runs"] if x is not None]) if v else "n/a")
        for ours, peer in ratio_pairs:
            r = row["ratios"].get(f"{ours}/{peer}")
            cells.append(_ratio_cell(r["runs"]) if r else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: list[list[dict[str, Any]]], systems: list[str], path: Path) -> None:
    """Box plots of the latencies of every run, per system: send to start when idle and
    under the backlog, and (this project) end to end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    panels = [("idle_latencies_ms", "send to start, idle worker"),
              ("state_latencies_ms", "state task start under the bulk backlog")]
    if any(r.get("e2e_latencies_ms") for run in runs for r in run):
        panels.append(("e2e_latencies_ms", "end to end: webhook to reply (this project)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        data, labels = [], []
        for system in systems:
            values = [v for run in runs for r in run if r.get("system") == system for v in r.get(key, [])]
            if values:
                data.append(values)
                labels.append(SYSTEMS[system].label.replace(" (", "\n("))
        if data:
            ax.boxplot(data, whis=(1, 99), showfliers=True)
            ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.set_ylabel("ms (log scale; whiskers p1-p99)")
        ax.set_title(title)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme(section: str, readme: Path = README) -> None:
    """Replace what stands between the README's last-results markers with ``section``."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} markers")
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    readme.write_text(pattern.sub(lambda _: f"{START}\n{section}\n{END}", text))
