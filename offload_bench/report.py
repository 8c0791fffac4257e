"""The benchmark's figures as Markdown tables and as a PNG plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

PEERS = ("flask_cached", "fastapi_cached")
LABELS = {
    "bare": "bare app",
    "memory": "offload, memory",
    "sqlite": "offload, SQLite",
    "redis": "offload, Redis",
    "flask_cached": "Flask-Caching (Redis)",
    "fastapi_cached": "fastapi-cache2 (Redis)",
}


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def paired_ratio(runs: list[dict[str, Any]], base: list[dict[str, Any]]) -> float:
    """The median over rounds of the ratio of requests/s measured in the same round."""
    return statistics.median(a["rps"] / b["rps"] for a, b in zip(runs, base, strict=False) if b["rps"])


def hit_table(results: dict[str, Any]) -> str:
    lines = [
        "| server / interface | app | req/s | p50 ms | p99 ms | vs bare | vs peer |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for setup, apps in results["hit_path"].items():
        peer = next((name for name in PEERS if name in apps), None)
        for name in sorted(apps, key=lambda n: list(LABELS).index(n) if n in LABELS else len(LABELS)):
            runs = apps[name]
            vs_bare = f"{paired_ratio(runs, apps['bare']):.2f}x" if name != "bare" else ""
            vs_peer = f"{paired_ratio(runs, apps[peer]):.1f}x" if peer and name == "redis" else ""
            lines.append(
                f"| {setup} | {LABELS.get(name, name)} | {median(runs, 'rps'):,.0f} | {median(runs, 'p50'):.2f} "
                f"| {median(runs, 'p99'):.2f} | {vs_bare} | {vs_peer} |"
            )
    return "\n".join(lines)


def tables(results: dict[str, Any]) -> str:
    parts = [f"# offload benchmark ({results.get('mode', '?')} mode)"]
    if "hit_path" in results:
        parts += ["## Hit path (1 KiB cached answer)", hit_table(results)]
    if "miss_storm" in results:
        lines = [
            "| server | handler runs | 202 p50 ms | 202 p99 ms | hit p50 ms | hit p99 ms | 202 req/s | hit req/s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for setup, storm in results["miss_storm"].items():
            miss, hit = storm["miss"], storm["hit"]
            lines.append(
                f"| {setup} | {storm['executions']} | {miss['p50']:.2f} | {miss['p99']:.2f} | {hit['p50']:.2f} "
                f"| {hit['p99']:.2f} | {miss['rps']:,.0f} | {hit['rps']:,.0f} |"
            )
        parts += ["## Miss storm (1,000 connections, one cold URL, Redis)", "\n".join(lines)]
    if "pickup" in results:
        lines = ["| backend | median ms | p99 ms | jobs |", "| --- | ---: | ---: | ---: |"]
        for backend, figures in results["pickup"].items():
            lines.append(f"| {backend} | {figures['median_ms']:.2f} | {figures['p99_ms']:.2f} | {figures['n']} |")
        parts += ["## Pickup latency (enqueue to job start, idle worker)", "\n".join(lines)]
    if "throughput" in results:
        runs = results["throughput"]
        ours = statistics.median(r["jobs_per_s"] for r in runs["offload worker"])
        lines = ["| worker | jobs/s | offload worker vs it |", "| --- | ---: | ---: |"]
        for name, figures in runs.items():
            rate = statistics.median(r["jobs_per_s"] for r in figures)
            lines.append(f"| {name} | {rate:,.0f} | {ours / rate:.1f}x |" if rate else f"| {name} | 0 | |")
        parts += ["## Worker throughput (trivial job, backlog, Redis, one process)", "\n".join(lines)]
    if "end_to_end" in results:
        e2e = results["end_to_end"]
        parts += [
            "## End to end (miss, job, stored answer, hit; Redis, gunicorn, one worker)",
            f"median {e2e['median_ms']:.1f} ms, p99 {e2e['p99_ms']:.1f} ms over {e2e['n']} URLs",
        ]
    if "isolation" in results:
        figures = results["isolation"]
        idle, busy = median(figures["idle"], "p99"), median(figures["busy"], "p99")
        parts += [
            "## Frontend isolation (hit p99, paced load)",
            "| workers | hit p50 ms | hit p99 ms |\n| --- | ---: | ---: |\n"
            f"| idle | {median(figures['idle'], 'p50'):.2f} | {idle:.2f} |\n"
            f"| all busy with CPU-heavy jobs | {median(figures['busy'], 'p50'):.2f} | {busy:.2f} |\n\n"
            f"busy / idle p99: {busy / idle:.2f}x",
        ]
    if "memory" in results:
        memory = results["memory"]
        lines = ["| web process, backend | keys | RSS before MiB | RSS after MiB |", "| --- | ---: | ---: | ---: |"]
        for backend, figures in memory["web"].items():
            before, after = figures["rss_before_mib"], figures["rss_after_mib"]
            lines.append(f"| {backend} | {figures['keys']:,} | {before:.1f} | {after:.1f} |")
        worker = memory["worker"]
        few, many = worker["jobs"]
        rss = worker["rss_mib"]
        lines.append("")
        lines.append(
            f"worker RSS: {rss.get('few', 0):.1f} MiB after {few:,} jobs, {rss.get('many', 0):.1f} MiB after {many:,} "
            f"({(rss.get('many', 0) / rss['few'] - 1) * 100 if rss.get('few') else 0:+.1f}%)"
        )
        parts += ["## Memory", "\n".join(lines)]
    if "failed" in results:
        parts += ["## Scenarios that failed", "\n".join(f"- {k}: {v}" for k, v in results["failed"].items())]
    return "\n\n".join(parts) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Requests/s on a hit, per server and interface, for the bare app, offload's backends and the peers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setups = list(results["hit_path"])
    names = ["bare", "memory", "sqlite", "redis", "peer"]
    colours = {"bare": "#888888", "memory": "#1f77b4", "sqlite": "#2ca02c", "redis": "#d62728", "peer": "#ff7f0e"}
    figure, axes = plt.subplots(figsize=(10, 4.8), dpi=120)
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        heights = []
        for setup in setups:
            apps = results["hit_path"][setup]
            key = name if name != "peer" else next((p for p in PEERS if p in apps), "")
            heights.append(median(apps[key], "rps") if key in apps else 0)
        label = LABELS.get(name, "peer: Flask-Caching / fastapi-cache2 (Redis)")
        positions = [x + (index - len(names) / 2 + 0.5) * width for x in range(len(setups))]
        axes.bar(positions, heights, width, label=label, color=colours[name])
    axes.set_xticks(range(len(setups)), setups)
    axes.set_ylabel("requests/s on a hit (median of rounds)")
    axes.set_title("1 KiB cached answer: one server process, wrk -t1 on the other core")
    axes.legend(fontsize=8, ncol=2)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
