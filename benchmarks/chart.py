"""Draw a benchmark report (the JSON `python -m benchmarks` writes) as one PNG: speed-ups and peak memory.

    python -m benchmarks.chart bench-results/latest.json bench-results/latest.png

matplotlib is an optional extra (`pip install -e '.[bench]'`), imported only here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Targets of issue #7, drawn as dashed lines on the kernel panel.
KERNEL_TARGETS = {"forward": 3.0, "forward+backward": 2.5}
OPS = ["forward", "backward", "forward+backward"]


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(
            "--chart needs matplotlib: .venv/bin/pip install -e '.[bench]' (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _setting(rows: list[dict]) -> tuple[str, int] | None:
    """The (malloc, threads) setting to draw: memory kept and the fewest threads when the run has them."""
    settings = sorted({(r["malloc"], r["threads"]) for r in rows}, key=lambda s: (s[0] != "kept", s[1]))
    return settings[0] if settings else None


def _grouped_bars(ax, labels: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        positions = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        ax.bar(positions, values, width, label=name)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def write_chart(report: dict, path: Path) -> None:
    plt = require_matplotlib()
    rows = report["rows"]
    kernels = [r for r in rows if r["level"] == "kernels" and r.get("dtype", "float32") == "float32"]
    e2e = [r for r in rows if r["level"] == "end-to-end"]
    panels = int(bool(kernels)) + 2 * int(bool(e2e))
    if panels == 0:
        raise SystemExit("the report has no rows to draw")
    fig, axes = plt.subplots(panels, 1, figsize=(11, 4.2 * panels), squeeze=False)
    axes = iter(axes[:, 0])

    if kernels:
        malloc, threads = _setting(kernels)
        chosen = [r for r in kernels if (r["malloc"], r["threads"]) == (malloc, threads)]
        cases = list(dict.fromkeys(("×".join(map(str, r["shape"])), r["layout"]) for r in chosen))
        speedup = {(("×".join(map(str, r["shape"])), r["layout"]), r["op"]): r["speedup"] for r in chosen}
        ax = next(axes)
        _grouped_bars(
            ax,
            [f"{shape}\n{layout}" for shape, layout in cases],
            {op: [speedup.get((case, op), 0.0) for case in cases] for op in OPS},
            "speed-up over torch (×)",
        )
        for op, target in KERNEL_TARGETS.items():
            ax.axhline(target, linestyle="--", linewidth=0.8, color="grey")
            # The targets' lines lie close together: the highest is labelled above its line, the others below.
            above = target == max(KERNEL_TARGETS.values())
            ax.annotate(
                f"target {op} {target}×",
                (1.0, target),
                xycoords=("axes fraction", "data"),
                fontsize=7,
                ha="right",
                va="bottom" if above else "top",
            )
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_title(
            f"Kernels vs torch.nn.functional.instance_norm (float32, affine, {threads} thread(s), malloc {malloc})",
            fontsize=10,
        )

    if e2e:
        malloc, threads = _setting(e2e)
        chosen = [r for r in e2e if (r["malloc"], r["threads"]) == (malloc, threads)]
        tasks = list(dict.fromkeys(r["task"] for r in chosen))
        configs = list(dict.fromkeys(r["config"] for r in chosen))
        by_key = {(r["task"], r["config"]): r for r in chosen}
        ax = next(axes)
        _grouped_bars(
            ax, tasks, {c: [by_key[t, c]["speedup"] for t in tasks] for c in configs}, "speed-up over the baseline (×)"
        )
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_title(f"End to end, transformer network ({threads} thread(s), malloc {malloc})", fontsize=10)
        ax = next(axes)
        _grouped_bars(
            ax,
            tasks,
            {c: [by_key[t, c].get("peak_mib") or 0.0 for t in tasks] for c in configs},
            "peak memory of one call (MiB)",
        )
        ax.set_title("End to end, peak memory (lower is better)", fontsize=10)

    fig.suptitle(f"{report['machine']}, torch {report['torch']}, {report['date']}", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    write_chart(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
