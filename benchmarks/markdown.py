"""Render a benchmark report (the JSON `python -m benchmarks` writes) as the README's markdown tables.

    python -m benchmarks.markdown bench-results/latest.json

Kernels: one row per shape and layout, speed-ups over torch's op with memory kept (when the run has it), one column
group per thread count. End to end: one row per task, speed-ups of styler's two layouts over the pytorch/examples
configuration per malloc setting, at the largest thread count, with peak memory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.chart import OPS  # chart.py imports matplotlib only when it draws


def _ratio(row: dict | None, digits: int = 1) -> str:
    return "–" if row is None else f"{row['speedup']:.{digits}f}×"


def kernel_table(rows: list[dict]) -> str:
    rows = [r for r in rows if r["level"] == "kernels"]
    malloc = "kept" if any(r["malloc"] == "kept" for r in rows) else rows[0]["malloc"]
    rows = [r for r in rows if r["malloc"] == malloc]
    threads = sorted({r["threads"] for r in rows})
    index = {(tuple(r["shape"]), r["layout"], r["dtype"], r["op"], r["threads"]): r for r in rows}
    header = ["shape", "layout", "dtype"]
    for t in threads:
        header += [f"{t}T forward (ms)", f"{t}T backward", f"{t}T fwd+bwd", f"{t}T fwd % of copy"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for shape, layout, dtype in dict.fromkeys((tuple(r["shape"]), r["layout"], r["dtype"]) for r in rows):
        cells = ["×".join(map(str, shape)), layout, dtype]
        for t in threads:
            forward = index.get((shape, layout, dtype, "forward", t))
            timing = "" if forward is None else f" ({forward['native_ms']:.2f} → {forward['ours_ms']:.2f})"
            cells += [_ratio(forward) + timing]
            cells += [_ratio(index.get((shape, layout, dtype, op, t))) for op in OPS[1:]]
            cells += ["–" if forward is None else f"{100 * forward['fraction_of_copy']:.0f} %"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def end_to_end_table(rows: list[dict]) -> str:
    rows = [r for r in rows if r["level"] == "end-to-end"]
    threads = max(r["threads"] for r in rows)
    rows = [r for r in rows if r["threads"] == threads]
    mallocs = list(dict.fromkeys(r["malloc"] for r in rows))
    # end_to_end.py measures its baseline (the pytorch/examples configuration) first; the rest are styler's.
    baseline, *configs = dict.fromkeys(r["config"] for r in rows)
    index = {(r["task"], r["config"], r["malloc"]): r for r in rows}
    header = ["task"] + [f"{m} malloc: " + " / ".join(configs) for m in mallocs] + ["peak MiB (baseline / best)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task in dict.fromkeys(r["task"] for r in rows):
        cells = [task]
        for m in mallocs:
            base = index.get((task, baseline, m))
            ratios = " / ".join(_ratio(index.get((task, c, m)), 2) for c in configs)
            cells.append(ratios + ("" if base is None else f" ({base['ms'] / 1e3:.2f} s base)"))
        base, best = index.get((task, baseline, mallocs[-1])), index.get((task, configs[-1], mallocs[-1]))
        peaks = [r.get("peak_mib") for r in (base, best) if r is not None]
        cells.append(" / ".join("–" if p is None else f"{p:.0f}" for p in peaks))
        lines.append("| " + " | ".join(cells) + " |")
    return f"{threads} thread(s):\n\n" + "\n".join(lines)


def render(report: dict) -> str:
    parts = [f"{report['machine']}, torch {report['torch']}, {report['date']}"]
    if any(r["level"] == "kernels" for r in report["rows"]):
        parts.append(kernel_table(report["rows"]))
    if any(r["level"] == "end-to-end" for r in report["rows"]):
        parts.append(end_to_end_table(report["rows"]))
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m benchmarks.markdown REPORT.json")
    sys.stdout.write(render(json.loads(Path(sys.argv[1]).read_text())))
