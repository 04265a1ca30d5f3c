"""`python -m benchmarks.prints`: whole-process peak memory and time of `styler stylize` on large photos.

    python -m benchmarks.prints --models starry,starry-lite --megapixels 6,25,50,100 --json results.json
    python -m benchmarks.prints --models starry --megapixels 6 --modes whole,out-of-core
    python -m benchmarks.prints --json results.json --table      # the markdown table of docs/benchmarks.md
    python -m benchmarks.prints --models starry --megapixels 6 --passes float32   # spill against recompute

Each run is a fresh `styler stylize` process under /usr/bin/time -v ("Maximum resident set size", wall time), on a
photo synthesized here (a shared or bundled photo upscaled to the size, saved as JPEG in a temporary folder, removed
afterwards). Modes: `whole` forces the whole-image path (--max-memory far above the need), `out-of-core` forces the
out-of-core path (STYLER_OUT_OF_CORE=1) within the model's budget (--max-memory), `budget` leaves the choice to
styler within that budget, `auto` to styler's default budget. STYLER_SPILL_DTYPE=float16 spills in half precision.
The thread count is OMP_NUM_THREADS, recorded in each row; run it under `taskset` to pin the cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SOURCE_PHOTOS = [
    ROOT.parent / "shared" / "data" / "train" / "100039.jpg",
    *sorted((ROOT / "samples" / "photos").glob("*.jpg")),
]
ASPECT = 3 / 2  # width / height, a camera's
BUDGETS = {"starry": "4G", "starry-lite": "2G"}  # the issue's: 100 MP johnson under 4 GB, lite under 2 GB
WHOLE = "1000G"


def synthesize(folder: Path, megapixels: float) -> Path:
    """A photo-like JPEG of about `megapixels`, 3:2."""
    height = round((megapixels * 1e6 / ASPECT) ** 0.5)
    width = round(height * ASPECT)
    path = folder / f"photo-{megapixels:g}mp.jpg"
    if not path.exists():
        source = next(photo for photo in SOURCE_PHOTOS if photo.exists())
        with Image.open(source) as image:
            image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC).save(path, quality=92)
    return path


def measure(photo: Path, model: str, mode: str, out: Path) -> dict:
    """One `styler stylize` process under /usr/bin/time -v."""
    budget = ["--max-memory", BUDGETS.get(model, "4G")]
    memory = {"whole": ["--max-memory", WHOLE], "out-of-core": budget, "budget": budget}.get(mode, [])
    forced = {"STYLER_OUT_OF_CORE": "1"} if mode == "out-of-core" else {}
    command = [
        "/usr/bin/time", "-v", sys.executable, "-m", "styler", "stylize", str(photo), "-m", model,
        "-o", str(out), "--overwrite", "--max-pixels", "1000000000", *memory,
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)} | forced
    )
    report = done.stderr

    def field(name: str) -> str:
        found = re.search(rf"{re.escape(name)}: (.*)", report)
        return found.group(1).strip() if found else ""

    elapsed = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
    seconds = (
        sum(float(part) * 60**index for index, part in enumerate(reversed(elapsed.split(":")))) if elapsed else None
    )
    with Image.open(photo) as image:
        width, height = image.size
    return {
        "model": model,
        "mode": mode,
        "max_memory": memory[1] if memory else "default",
        "width": width,
        "height": height,
        "megapixels": round(width * height / 1e6, 1),
        "peak_gib": round(int(field("Maximum resident set size (kbytes)") or 0) / 2**20, 2),
        "seconds": seconds,
        "out_of_core": "stylized out of core" in report,
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or len(os.sched_getaffinity(0)),
        "spill": os.environ.get("STYLER_SPILL_DTYPE", "float32"),
        "exit_code": done.returncode,
        "error": None if done.returncode == 0 else report.strip().splitlines()[-1:],
    }


def pass_times(photo: Path, model: str, spill: str) -> dict:
    """In this process: the out-of-core path's seconds in convolutions (per pass) and in spill writes and reads, and
    what recomputing instead of spilling would cost in convolutions: the statistics of the k-th norm need passes 1..k
    again over the whole image, so the sum of the per-pass times' prefix sums."""
    import time

    import torch

    from styler.io.images import Photo
    from styler.memory import keep_freed_memory
    from styler.model import out_of_core
    from styler.model.model_files import model_from_contents, read_model_contents, resolve_model_file
    from styler.model.stylizer import Stylizer, choose_style

    keep_freed_memory()
    spent = {"pwrite": 0.0, "preadv": 0.0}
    per_pass: list[float] = []

    def timed(function, add):
        def wrapper(*args):
            started = time.perf_counter()
            result = function(*args)
            add(time.perf_counter() - started)
            return result

        return wrapper

    def add_to_pass(seconds: float) -> None:
        per_pass[-1] += seconds

    def count_in(name: str):
        return lambda seconds: spent.__setitem__(name, spent[name] + seconds)

    convolve = out_of_core.OutOfCore.convolve
    out_of_core.OutOfCore.convolve = lambda self, *args: (per_pass.append(0.0), convolve(self, *args))[1]
    out_of_core.conv_band = timed(out_of_core.conv_band, add_to_pass)
    for name in spent:
        setattr(out_of_core.os, name, timed(getattr(out_of_core.os, name), count_in(name)))
    path = resolve_model_file(model)
    loaded = model_from_contents(read_model_contents(path), path)
    stylizer = Stylizer(
        loaded, choose_style(None, loaded.styles), torch.device("cpu"), max_memory=4 * 2**30, spill=spill
    )
    stylizer.force_out_of_core = True
    with Image.open(photo) as image:
        started = time.perf_counter()
        stylizer(Photo(image.convert("RGB"), None, None))
        total = time.perf_counter() - started
    recompute = sum(sum(per_pass[: index + 1]) for index in range(len(per_pass)))
    return {
        "model": model,
        "spill": spill,
        "megapixels": round(image.width * image.height / 1e6, 1),
        "seconds": round(total, 1),
        "conv_seconds": round(sum(per_pass), 1),
        "spill_write_seconds": round(spent["pwrite"], 1),
        "spill_read_seconds": round(spent["preadv"], 1),
        "recompute_conv_seconds": round(recompute, 1),
        "per_pass_conv_seconds": [round(seconds, 2) for seconds in per_pass],
        "threads": torch.get_num_threads(),
    }


def table(rows: list[dict]) -> str:
    """The report as the markdown table of docs/benchmarks.md, by size, then model, whole before out of core."""
    lines = [
        "| megapixels | model | path | --max-memory | peak (GiB) | seconds | threads |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda row: (row["megapixels"], row["model"] != "starry", row["mode"] != "whole")):
        path = "out of core" if row["out_of_core"] else "whole image"
        seconds = f"{row['seconds']:.0f}" if row["exit_code"] == 0 else f"failed: {row['error']}"
        lines.append(
            f"| {row['megapixels']:g} ({row['width']}×{row['height']}) | {row['model']} | {path} | "
            f"{row['max_memory']} | {row['peak_gib']:.2f} | {seconds} | {row['threads']} |"
        )
    return "\n".join(lines)


def chart(rows: list[dict], path: Path) -> None:
    """The curve: peak memory and seconds against megapixels, one line per model and path."""
    from benchmarks.chart import require_matplotlib

    plt = require_matplotlib()
    figure, (memory, seconds) = plt.subplots(1, 2, figsize=(11, 4.2))
    lines: dict[tuple[str, bool], list[dict]] = {}
    for row in rows:
        if row["exit_code"] == 0:
            lines.setdefault((row["model"], row["out_of_core"]), []).append(row)
    for (model, out_of_core), points in sorted(lines.items()):
        points.sort(key=lambda row: row["megapixels"])
        label = f"{model}, {'out of core' if out_of_core else 'whole image'}"
        style = "o-" if out_of_core else "s--"
        megapixels = [row["megapixels"] for row in points]
        memory.plot(megapixels, [row["peak_gib"] for row in points], style, label=label)
        seconds.plot(megapixels, [row["seconds"] / 60 for row in points], style, label=label)
    memory.set(xlabel="megapixels", ylabel="peak memory, whole process (GiB)", title="memory")
    seconds.set(xlabel="megapixels", ylabel="minutes (one thread)", title="time")
    for axis in (memory, seconds):
        axis.grid(alpha=0.3)
    memory.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="starry,starry-lite")
    parser.add_argument("--megapixels", default="6,25,50,100")
    parser.add_argument("--modes", default="out-of-core")
    parser.add_argument("--json", type=Path, default=Path("bench-results/prints.json"))
    parser.add_argument("--table", action="store_true", help="print the --json report as a markdown table and stop")
    parser.add_argument("--chart", type=Path, help="draw the --json report as a PNG (matplotlib) and stop")
    parser.add_argument(
        "--passes", metavar="SPILL", help="time the out-of-core passes in this process, spilling float32 or float16"
    )
    arguments = parser.parse_args()
    if arguments.chart:
        chart(json.loads(arguments.json.read_text())["rows"], arguments.chart)
        return
    if arguments.table:
        print(table(json.loads(arguments.json.read_text())["rows"]))
        return
    if arguments.passes:
        with tempfile.TemporaryDirectory(prefix="styler-prints-") as folder:
            photo = synthesize(Path(folder), float(arguments.megapixels.split(",")[0]))
            for model in arguments.models.split(","):
                print(json.dumps(pass_times(photo, model, arguments.passes)), flush=True)
        return
    rows = []
    if arguments.json.exists():  # several invocations add to one report
        rows = json.loads(arguments.json.read_text())["rows"]
    with tempfile.TemporaryDirectory(prefix="styler-prints-") as folder:
        for megapixels in [float(value) for value in arguments.megapixels.split(",")]:
            photo = synthesize(Path(folder), megapixels)
            for model in arguments.models.split(","):
                for mode in arguments.modes.split(","):
                    row = measure(photo, model, mode, Path(folder) / "out.jpg")
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                    report = {"date": datetime.date.today().isoformat(), "rows": rows}
                    arguments.json.parent.mkdir(parents=True, exist_ok=True)
                    arguments.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
