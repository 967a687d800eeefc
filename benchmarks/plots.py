"""Plots for docs/benchmarks.md from the raw figures the benchmarks leave in build/bench/.

python benchmarks/plots.py      (make bench runs it last; needs matplotlib)
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RAW = Path("build/bench")
OUT = Path("docs/img")


def latency_cdf() -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for loop, style in (("asyncio", "-"), ("uvloop", "--")):
        path = RAW / f"e2e-{loop}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        for side, label in (("bare_ms", "bare websockets + orjson"), ("ours_ms", "bitmusa-plugin")):
            values = sorted(data[side])
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax.plot(values, ys, style, label=f"{label} ({loop})")
    ax.set_xscale("log")
    ax.set_xlabel("frame written → handled (ms, log scale), 1,000 frames/s over loopback")
    ax.set_ylabel("fraction of frames")
    ax.set_title("Latency CDF: end to end against a bare client")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "latency-cdf.png", dpi=110)


def dispatch_scaling() -> None:
    path = RAW / "dispatch.json"
    if not path.exists():
        return
    rows = json.loads(path.read_text())
    base = next(cost for kind, n, cost in rows if n == 0)
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind in ("async", "sync"):
        points = sorted((n, cost) for k, n, cost in rows if k == kind)
        ax.plot([0] + [n for n, _ in points], [base] + [c for _, c in points], "o-", label=kind)
    ax.set_xlabel("no-op plugins")
    ax.set_ylabel("µs per event (decode + map + dispatch)")
    ax.set_title("Dispatch cost against the number of plugins")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "dispatch-scaling.png", dpi=110)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    latency_cdf()
    dispatch_scaling()
    print(f"plots written to {OUT}/")
