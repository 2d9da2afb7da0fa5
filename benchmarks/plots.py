"""PNG plots of a run (matplotlib, headless): wake-up latency, calls and CPU per wait against N, ours vs baselines."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def make_plots(report: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Write the plots into ``folder``; return ``{name: path}`` (or ``{"error": ...}`` without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        return {"error": f"matplotlib not installed: {error}"}
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    rows = [r for r in report.get("rows", []) if "1-hold" not in r["variant"] and "universal" not in r["variant"]]
    by_variant: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], {}).setdefault(row["N"], []).append(row)
    for metric, name in (("calls/wait", "calls_per_wait.png"), ("CPU ms/wait", "cpu_per_wait.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for variant, per_n in sorted(by_variant.items()):
            ns = sorted(per_n)
            ax.plot(ns, [statistics.median(r[metric] for r in per_n[n]) for n in ns], marker="o", label=variant)
        ax.set_xscale("log")
        ax.set_xlabel("N concurrent waits (one event loop)")
        ax.set_ylabel(metric + " (median of runs)")
        ax.set_title(f"{metric} against N")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        out[metric] = str(folder / name)
    triggerer = report.get("triggerer") or {}
    variants = (triggerer.get("raw") or {}).get("variants") or {}
    if variants:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for variant, detail in variants.items():
            values = sorted(detail.get("e2e", []))
            if values:
                ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=f"{variant} (end to end)")
        sched = [x for d in variants.values() for x in d.get("sched", [])]
        if sched:
            values = sorted(sched)
            ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], "k--", label="scheduler's own")
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        ax.set_xlabel("seconds from the generation's completion to the downstream task's start")
        ax.set_ylabel("fraction of waits")
        ax.set_title(f"Real triggerer, N = {triggerer.get('n')}: wake-up to downstream start")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "latency_real_triggerer.png", dpi=100)
        plt.close(fig)
        out["latency"] = str(folder / "latency_real_triggerer.png")
    return out
