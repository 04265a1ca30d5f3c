"""`python -m benchmarks`: run the benchmark levels, print tables, write JSON.

    python -m benchmarks kernels --threads 1,2 --malloc default,kept
    python -m benchmarks end-to-end
    python -m benchmarks --chart bench-results/latest.png    # also draw the speed-ups (needs matplotlib)
    python -m benchmarks.chart bench-results/latest.json bench-results/latest.png   # redraw from the JSON
Each (malloc setting, thread count) runs in its own process, so both sides of a ratio share one setting.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.timing import apply_settings, machine_description

LEVELS = {"kernels": "benchmarks.kernels", "end-to-end": "benchmarks.end_to_end"}


def run_one(level: str, device: str, threads: int, malloc: str, quick: bool) -> list[dict]:
    """In this process: apply the settings, run one level, tag its rows."""
    import importlib

    apply_settings(threads, malloc, quick)
    rows = importlib.import_module(LEVELS[level]).run(device, quick)
    for row in rows:
        row |= {"level": level, "threads": threads, "malloc": malloc}
    return rows


def print_table(rows: list[dict]) -> None:
    columns = [
        "level",
        "malloc",
        "threads",
        "device",
        "task",
        "config",
        "ms",
        "dtype",
        "layout",
        "shape",
        "op",
        "native_ms",
        "ours_ms",
        "speedup",
        "fraction_of_copy",
        "peak_mib",
    ]
    columns = [c for c in columns if any(c in r for r in rows)]
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("level", choices=[*LEVELS, "all"], nargs="?", default="all")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", default="1,2", help="comma-separated CPU thread counts")
    parser.add_argument("--malloc", default="default,kept", help="default and/or kept (see styler/memory.py)")
    parser.add_argument(
        "--quick", action="store_true", help="few small cases and repeats: a smoke run, not a measurement"
    )
    parser.add_argument("--json", type=Path, default=Path("bench-results/latest.json"))
    parser.add_argument("--chart", type=Path, help="also draw the speed-ups and peak memory to this PNG (matplotlib)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: run in this process
    args = parser.parse_args()
    levels = list(LEVELS) if args.level == "all" else [args.level]

    if args.chart:
        from benchmarks.chart import require_matplotlib

        require_matplotlib()  # fail before the run, not after it
    if args.one:
        rows = run_one(levels[0], args.device, int(args.threads), args.malloc, args.quick)
        json.dump(rows, sys.stdout)
        return

    rows = []
    for level in levels:
        for malloc in args.malloc.split(","):
            for threads in args.threads.split(","):
                cmd = [
                    sys.executable,
                    "-m",
                    "benchmarks",
                    level,
                    "--one",
                    "--device",
                    args.device,
                    "--threads",
                    threads,
                    "--malloc",
                    malloc,
                ] + (["--quick"] if args.quick else [])
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                rows.extend(json.loads(out))
    print_table(rows)
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": machine_description(args.device),
        "torch": torch.__version__,
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, args.json)
    print(f"\n{report['machine']}, torch {report['torch']}, {report['date']}: wrote {args.json}")
    if args.chart:
        from benchmarks.chart import write_chart

        write_chart(report, args.chart)
        print(f"wrote {args.chart}")


if __name__ == "__main__":
    main()
