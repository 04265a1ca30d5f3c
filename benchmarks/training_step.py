"""`python -m benchmarks.training_step`: where one `styler train` step's time goes, on this CPU.

    python -m benchmarks.training_step --arch johnson,lite --batch 2,4 --threads 1,2 --out bench-results/step.json

One VGG16-loss step (256 px crops, a 256 px painting, Adam) split into its parts, each timed on its own: the
transformer's forward, VGG16 on the photo (content target, relu2_2 only), VGG16 on the output to relu4_3 with the
Gram matrices and loss terms, the backward through VGG16 and the loss, the backward through the transformer, and
the optimizer (the painting's Gram targets are computed once, when the loss is built). Each configuration in three
precisions: float32, float32 channels-last, and channels-last under bfloat16 autocast (`train --channels-last
--amp`; only where the CPU has bfloat16 instructions). Achieved GFLOP/s counts the step's floating-point operations
(torch's FlopCounterMode, in a separate untimed step) over its time, against this core's peak estimated from its
clock and vector width (an estimate: cores differ in FMA ports). Each thread count runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from styler.devices import cpu_has_bfloat16
from styler.model.architecture import architecture
from styler.model.network import TransformerNet
from styler.training.config import DEFAULT_WEIGHTS
from styler.training.losses import PerceptualLoss
from styler.vgg16 import VGG16Features, load_vgg16_weights

PARTS = ("transformer forward", "VGG16 on photo", "VGG16 on output + loss", "backward: VGG16 + loss",
         "backward: transformer", "optimizer")  # fmt: skip
PRECISIONS = ("float32", "channels-last", "channels-last bfloat16")


def timed_step(
    net, loss, optimizer, photos, precision: str, counter: FlopCounterMode | None = None
) -> dict[str, float]:
    """One step, part by part: {part: seconds}. With a counter, its floating-point operations are counted (the
    counter intercepts every operation: those times mean nothing)."""
    autocast = torch.autocast("cpu", torch.bfloat16) if "bfloat16" in precision else nullcontext()
    times: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(part: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[part] = now - clock
        clock = now

    with counter or nullcontext():
        with autocast:
            output = net(photos)
            lap(PARTS[0])
            with torch.no_grad():
                content = loss.network(photos, loss.network.content_layers)
            lap(PARTS[1])
            leaf = output.detach().requires_grad_()  # splits the backward at the transformer's output
            terms = loss.terms(leaf, content, loss.style_grams(0), 1.0)
            if loss.colors is not None:
                terms.color = loss.weights.color * loss.colors(leaf, 0).mean()
            lap(PARTS[2])
        terms.total.backward()  # into leaf.grad only: VGG16 is frozen
        lap(PARTS[3])
        optimizer.zero_grad(set_to_none=True)
        output.backward(leaf.grad)
        lap(PARTS[4])
        optimizer.step()
        lap(PARTS[5])
    return times


def peak_gflops_per_core() -> tuple[float, str]:
    """This core's float32 FMA peak: its clock times 2 FMA ports times the vector width (an estimate)."""
    mhz = max(float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
              if line.startswith("cpu MHz"))  # fmt: skip
    capability = torch.backends.cpu.get_cpu_capability()
    lanes = 16 if "AVX512" in capability else 8
    return mhz / 1000 * 2 * 2 * lanes, f"{capability}, {mhz:.0f} MHz, 2 FMA ports x {lanes} float32 lanes"


def run(arches: list[str], batches: list[int], repeats: int) -> list[dict]:
    weights, _ = load_vgg16_weights(None)
    generator = torch.Generator().manual_seed(0)
    painting = torch.rand(1, 3, 256, 256, generator=generator) * 255
    rows = []
    for arch in arches:
        for batch in batches:
            photos = torch.rand(batch, 3, 256, 256, generator=generator) * 255
            for precision in PRECISIONS:
                if "bfloat16" in precision and not cpu_has_bfloat16():
                    continue
                layout = torch.channels_last if "channels-last" in precision else torch.contiguous_format
                net = TransformerNet(architecture(arch)).to(memory_format=layout)
                loss = PerceptualLoss(VGG16Features(weights), [painting], DEFAULT_WEIGHTS["vgg16"])
                loss = loss.to(memory_format=layout)
                optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
                inputs = photos.contiguous(memory_format=layout)
                counter = FlopCounterMode(display=False)
                timed_step(net, loss, optimizer, inputs, precision, counter)  # also the warm-up
                gflop = counter.get_total_flops() / 1e9
                runs = [timed_step(net, loss, optimizer, inputs, precision) for _ in range(repeats)]
                best = min(runs, key=lambda run: sum(run.values()))
                seconds = sum(best.values())
                rows.append({"arch": arch, "batch": batch, "threads": torch.get_num_threads(),
                             "precision": precision, "step_seconds": seconds, "parts": best, "gflop": gflop,
                             "gflops": gflop / seconds})  # fmt: skip
                print(f"{arch} batch {batch} {torch.get_num_threads()} thread(s) {precision}: {seconds:.2f} s, "
                      f"{gflop / seconds:.0f} GFLOP/s", file=sys.stderr)  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| arch | batch | threads | precision | step (s) | " + " | ".join(PARTS) + " | GFLOP/s |",
             "|---" * (6 + len(PARTS)) + "|"]  # fmt: skip
    for row in rows:
        parts = " | ".join(f"{row['parts'][part]:.2f}" for part in PARTS)
        lines.append(f"| {row['arch']} | {row['batch']} | {row['threads']} | {row['precision']} | "
                     f"{row['step_seconds']:.2f} | {parts} | {row['gflops']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="johnson,lite")
    parser.add_argument("--batch", default="2,4")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: this process's thread count
    args = parser.parse_args(argv)
    arches, batches = args.arch.split(","), [int(batch) for batch in args.batch.split(",")]
    if args.one is not None:
        torch.set_num_threads(args.one)
        json.dump(run(arches, batches, args.repeats), sys.stdout)
        return
    rows = []
    for threads in (int(count) for count in args.threads.split(",")):
        command = [sys.executable, "-m", "benchmarks.training_step", "--arch", args.arch, "--batch", args.batch,
                   "--repeats", str(args.repeats), "--one", str(threads)]  # fmt: skip
        rows += json.loads(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout)
    peak, how = peak_gflops_per_core()
    print(table(rows))
    print(f"\nPeak per core (estimate): {peak:.0f} GFLOP/s float32 ({how}); bfloat16 on AMX can exceed it.")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"peak_gflops_per_core": peak, "peak_how": how, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
