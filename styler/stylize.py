"""`styler stylize`: photos in, stylized photos out, one at a time, with the model loaded once.

Every file either gets a complete output of exactly its (oriented, optionally rescaled) size or one line saying why
not; the run goes on and reports failures in its exit status.
"""

from __future__ import annotations

import gc
import glob
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import instancenorm
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from styler import __version__
from styler.errors import StylerError
from styler.images import (
    DEFAULT_MAX_PIXELS,
    READABLE_EXTENSIONS,
    WRITERS,
    Photo,
    encode_photo,
    read_photo,
    write_photo,
    writer_for,
)
from styler.memory import keep_freed_memory
from styler.model_files import StyleModel, open_new, os_error_text, resolve_model, temporary_name

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_OUTPUT_SUFFIX = (
    ".png"  # for inputs whose own format styler does not write (gif, psd, ...): lossless, keeps alpha
)
# BT.601 luma, the Y of JPEG's YCbCr: with Cb and Cr held fixed, a change of Y moves R, G and B by the same amount.
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class StylizeOptions:
    model: str
    style: str | None = None
    output: str | Path | None = None  # a string keeps a trailing slash: "-o newdir/" names a folder
    output_dir: Path | None = None
    overwrite: bool = False
    max_size: int | None = None
    scale: float | None = None
    device: str = "auto"
    precision: str = "float32"
    strength: float = 1.0
    preserve_color: bool = False
    max_pixels: int | None = None  # None: images.DEFAULT_MAX_PIXELS
    json_output: bool = False
    recursive: bool = False  # folders: also their subfolders, mirrored under output_dir

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise StylerError(f"--strength {self.strength} is not between 0 and 1")
        if self.scale is not None and not 0.0 < self.scale <= 8.0:
            raise StylerError(f"--scale {self.scale} is not in (0, 8]")
        if self.max_size is not None and self.max_size < 1:
            raise StylerError(f"--max-size {self.max_size} is not a positive number of pixels")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise StylerError(f"--max-pixels {self.max_pixels} is not a positive number of pixels")
        if self.device not in DEVICES:
            raise StylerError(f"--device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise StylerError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.output is not None and self.output_dir is not None:
            raise StylerError("give either --output or --output-dir, not both")


@dataclass
class Job:
    input: Path
    output: Path | None = None
    error: str | None = None  # set when the job is refused before any work (bad input, output exists...)
    listed: bool = False  # found in a folder or by a pattern, not named: styler's own outputs are skipped
    subfolder: Path = Path()  # where under the folder given it was found (-r): its output goes there under -d

    @property
    def to_stdout(self) -> bool:
        return self.output == STDIO


STDIO = Path("-")  # "-" as input: standard input; as --output: standard output, as PNG (./- names a file "-")
STDOUT_SUFFIX = ".png"


@dataclass
class Result:
    input: str
    output: str | None
    size: tuple[int, int] | None
    seconds: float
    error: str | None
    skipped: bool = False  # a listed file that is styler's own output

    def as_json(self) -> str:
        return json.dumps(
            {
                "input": self.input,
                "output": self.output,
                "size": self.size,
                "seconds": round(self.seconds, 4),
                "error": self.error,
                "skipped": self.skipped,
                "styler_version": __version__,
            }
        )


# ------------------------------------------------------------------------------------------ inputs and outputs


def expand_inputs(arguments: list[str], recursive: bool = False, not_images: list[Path] | None = None) -> list[Job]:
    """Files as given, folders as their images (sorted; with `recursive` also those in subfolders, hidden ones
    left out), glob patterns as their matches; a file given twice (under any name) is stylized once. The other
    files found in folders are appended to `not_images`."""
    jobs: list[Job] = []
    for argument in arguments:
        path = Path(argument).expanduser()
        if argument == "-":
            jobs.append(Job(STDIO))
        elif path.is_dir():
            images = folder_images(path, recursive, not_images)
            jobs += [Job(p, listed=True, subfolder=p.parent.relative_to(path)) for p in images] or [
                Job(path, error=f"{path}: folder holds no images")
            ]
        elif path.exists() or not glob.has_magic(argument):
            jobs.append(Job(path))
        else:
            matches = sorted(Path(match) for match in glob.glob(str(path), recursive=True) if Path(match).is_file())
            jobs += [Job(p, listed=True) for p in matches] or [Job(path, error=f"{argument}: no files match")]
    seen: set[tuple[int, int]] = set()
    unique = []
    for job in jobs:
        identity = _file_identity(job.input)
        if identity is None or identity not in seen:
            unique.append(job)
        if identity is not None:
            seen.add(identity)
    return unique


def folder_images(folder: Path, recursive: bool, not_images: list[Path] | None = None) -> list[Path]:
    """The image files (by extension) in `folder`, and with `recursive` in its subfolders, sorted; the other files
    go to `not_images`."""
    if not recursive:
        candidates = [path for path in folder.iterdir() if path.is_file()]
    else:
        candidates = []
        for root, directories, files in os.walk(folder):
            directories[:] = sorted(d for d in directories if not d.startswith("."))
            candidates += [Path(root) / name for name in files if (Path(root) / name).is_file()]
    if not_images is not None:
        not_images += [path for path in candidates if path.suffix.lower() not in READABLE_EXTENSIONS]
    return sorted(path for path in candidates if path.suffix.lower() in READABLE_EXTENSIONS)


def skip_own_outputs(jobs: list[Job], style_tag: str) -> list[Job]:
    """Listed files named <stem>-<style tag> beside a listed <stem>.*: this style's outputs of an earlier run, which
    would otherwise be stylized again (a-starry-starry.jpg). Outputs of any style are also recognised by the mark
    styler writes in their metadata (see _stylize_one). Returns the jobs skipped."""
    stems = {(job.input.parent, job.input.stem) for job in jobs if job.listed}
    suffix = f"-{style_tag}"
    skipped = [
        job
        for job in jobs
        if job.listed
        and job.input.stem.endswith(suffix)
        and (job.input.parent, job.input.stem.removesuffix(suffix)) in stems
    ]
    return skipped


def check_output_folder(folder: Path) -> str | None:
    """Why no file can be created in `folder` (a read-only folder or file system, a missing folder), found by
    creating and removing a hidden probe file before any work; None when outputs can be written there."""
    probe = temporary_name(folder / "styler-probe")
    try:
        os.close(open_new(probe))
    except OSError as error:
        return os_error_text(error)
    try:
        os.unlink(probe)
    except OSError:
        pass
    return None


def plan_outputs(jobs: list[Job], style_tag: str, options: StylizeOptions) -> None:
    """Name each job's output and refuse, per job, outputs that would overwrite an input, another job or a file."""
    output_dir = options.output_dir
    if any(job.input == STDIO for job in jobs) and (len(jobs) > 1 or options.output is None):
        raise StylerError("- (standard input) is stylized alone and needs --output FILE, or -o - for standard output")
    if str(options.output) == "-":
        if len(jobs) != 1:
            raise StylerError(f"-o - (standard output) takes one image but there are {len(jobs)} inputs")
        if options.json_output:
            raise StylerError("--json and -o - both write to standard output; choose one")
        jobs[0].output = STDIO
        return
    single_output = None if options.output is None else Path(options.output)
    if single_output is not None and (single_output.is_dir() or str(options.output).endswith(("/", os.sep))):
        output_dir, single_output = single_output, None
    if single_output is not None:
        if len(jobs) != 1:
            raise StylerError(f"--output names one file but there are {len(jobs)} inputs; use --output-dir")
        writer_for(single_output)
    # Every output folder is created and tried before any work (a read-only -d was found after the first photo).
    for folder, flag in ((output_dir, "--output-dir"), (single_output and single_output.parent, "--output")):
        if folder is None:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StylerError(f"{folder}: cannot create the output folder ({os_error_text(error)})") from None
        problem = check_output_folder(folder)
        if problem:
            raise StylerError(f"{folder}: cannot write outputs in this folder ({problem})")
    folder_problems: dict[Path, str | None] = {}
    input_files = {_file_identity(job.input) for job in jobs} - {None}
    planned: dict[Path, Path] = {}  # output -> the input writing it
    for job in jobs:
        if job.error:
            continue
        folder = output_dir / job.subfolder if output_dir is not None else None
        job.output = single_output or default_output(job.input, style_tag, folder)
        try:
            target = job.output.resolve()
            if _file_identity(job.output) in input_files:
                job.error = f"{job.output}: refusing to overwrite an input"
            elif target in planned:  # e.g. photo.gif and photo.psd, both written as PNG
                job.error = (
                    f"{job.output}: {planned[target]} already writes this output; stylize {job.input.name} with -o"
                )
            elif job.output.exists() and not options.overwrite:
                job.error = f"{job.output}: exists (pass --overwrite to replace it)"
            elif job.output.parent not in folder_problems:
                if job.subfolder != Path() and output_dir is not None:  # -r mirrors the tree under -d
                    job.output.parent.mkdir(parents=True, exist_ok=True)
                folder_problems[job.output.parent] = check_output_folder(job.output.parent)
            if not job.error and folder_problems.get(job.output.parent):
                job.error = f"{job.output}: cannot write ({folder_problems[job.output.parent]})"
        except OSError as error:  # e.g. a name over the file system's limit: this file fails, the others go on
            job.error = f"{job.output}: cannot write ({os_error_text(error)})"
            continue
        planned.setdefault(target, job.input)


def default_output(input_path: Path, style_tag: str, output_dir: Path | None) -> Path:
    suffix = input_path.suffix.lower() if input_path.suffix.lower() in WRITERS else DEFAULT_OUTPUT_SUFFIX
    return (output_dir or input_path.parent) / f"{input_path.stem}-{style_tag}{suffix}"


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode): equal for the same file under any name (symlinks, hard links, case-insensitive systems)."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


# ----------------------------------------------------------------------------------------------- the model side


@dataclass(frozen=True)
class StyleChoice:
    tag: str  # names outputs: "starry" or "starry70+wave30"
    weights: tuple[float, ...] | None  # per style of a multi-style model; None for a single-style model


def choose_style(spec: str | None, styles: list[str]) -> StyleChoice:
    """--style: a style name, or name=weight,... to blend a multi-style model's styles (weights normalized)."""
    if len(styles) == 1:
        if spec not in (None, styles[0]):
            raise StylerError(f"--style {spec!r}: this model has the single style {styles[0]!r}")
        return StyleChoice(_safe_name(styles[0]), None)
    if spec is None:
        raise StylerError(
            f"this model holds {len(styles)} styles ({', '.join(styles)}): pick one or a blend with --style"
        )
    weights = dict.fromkeys(styles, 0.0)
    for part in spec.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in weights:
            raise StylerError(f"--style: unknown style {name!r}; this model has {', '.join(styles)}")
        try:
            weights[name] += float(weight) if weight else 1.0
        except ValueError:
            raise StylerError(f"--style: weight {weight!r} of {name!r} is not a number") from None
    total = sum(weights.values())  # finite weights can still add up to infinity: 1e308 + 1e308
    if any(w < 0 or not math.isfinite(w) for w in weights.values()) or not (0 < total < math.inf):
        raise StylerError(f"--style {spec!r}: weights must be non-negative with a positive sum")
    mix = tuple(w / total for w in weights.values())
    used = [(name, w) for name, w in zip(styles, mix, strict=True) if w > 0]
    tag = used[0][0] if len(used) == 1 else "+".join(f"{name}{round(100 * w)}" for name, w in used)
    return StyleChoice(_safe_name(tag), mix)


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "+-_." else "_" for c in text)


def pick_device(requested: str) -> torch.device:
    cuda_ready = "cuda" in instancenorm.compiled_devices and torch.cuda.is_available()
    if requested == "cuda" and not cuda_ready:
        why = (
            "no CUDA GPU is visible"
            if "cuda" in instancenorm.compiled_devices
            else "instancenorm was built without CUDA"
        )
        raise StylerError(f"--device cuda: {why}")
    return torch.device("cuda" if requested == "cuda" or (requested == "auto" and cuda_ready) else "cpu")


class Stylizer:
    """The network on its device, the chosen style, and the per-photo pipeline around it."""

    def __init__(self, model: StyleModel, choice: StyleChoice, device: torch.device, precision: str = "float32"):
        if precision == "float16" and device.type != "cuda":
            raise StylerError("--precision float16 is for CUDA; on the CPU use bfloat16 or float32")
        self.device, self.autocast_dtype = device, PRECISIONS[precision]
        self.arch = model.arch
        self.network = model.build().to(device, memory_format=torch.channels_last)
        self.style = None if choice.weights is None else torch.tensor([choice.weights], device=device)

    def __call__(self, photo: Photo, strength: float = 1.0, preserve_color: bool = False) -> Photo:
        content = image_to_tensor(photo.rgb).to(self.device)
        styled = self.stylize_tensor(content)
        if preserve_color:
            styled = keep_colors(content, styled)
        result = styled if strength == 1.0 else torch.lerp(content, styled, strength)
        return Photo(tensor_to_image(result), photo.alpha, photo.icc_profile, photo.exif)

    @torch.inference_mode()
    def stylize_tensor(self, content: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) in 0..255 to the same shape: mirror-padded to what the network needs, then cropped back."""
        height, width = content.shape[-2:]
        multiple, smallest = self.arch.size_multiple, self.arch.min_size
        padded = mirror_pad_to(
            content, max(smallest, _round_up(height, multiple)), max(smallest, _round_up(width, multiple))
        )
        autocast = torch.autocast(self.device.type, self.autocast_dtype) if self.autocast_dtype else nullcontext()
        with autocast:
            styled = self.network(padded.contiguous(memory_format=torch.channels_last), self.style)
        return styled[..., :height, :width].float().clamp(0, 255)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def mirror_pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Extend (N, C, h, w) to (N, C, height, width) by mirroring at the bottom and right edges.

    A reflection can add at most side-1 pixels, so tiny images are mirrored repeatedly; a 1-pixel side has nothing
    to mirror and is repeated once first.
    """
    while x.shape[-2:] != (height, width):
        h, w = x.shape[-2:]
        if min(h, w) == 1:
            x = F.pad(x, (0, min(1, width - w), 0, min(1, height - h)), mode="replicate")
        else:
            x = F.pad(x, (0, min(width - w, w - 1), 0, min(height - h, h - 1)), mode="reflect")
    return x


def keep_colors(content: torch.Tensor, styled: torch.Tensor) -> torch.Tensor:
    """The stylized luminance with the photo's chroma (YCbCr), after Gatys et al. 2017, "Controlling perceptual
    factors in neural style transfer": adding the luma difference to every channel leaves Cb and Cr unchanged."""
    luma = torch.tensor(LUMA, device=content.device).view(1, 3, 1, 1)
    difference = ((styled - content) * luma).sum(dim=1, keepdim=True)
    return (content + difference).clamp(0, 255)


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image to (1, 3, H, W) float32 in 0..255; the HWC array makes it channels_last without a copy."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0).float()


def tensor_to_image(x: torch.Tensor) -> Image.Image:
    array = x[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def target_size(size: tuple[int, int], scale: float | None, max_size: int | None) -> tuple[int, int]:
    """--scale first, then --max-size shrinks the long side; each side stays at least one pixel."""
    width, height = size
    factor = scale or 1.0
    if max_size is not None:
        factor = min(factor, max_size / max(width, height))
    return max(1, round(width * factor)), max(1, round(height * factor))


# ----------------------------------------------------------------------------------------------- the run


def prepare(arguments: list[str], options: StylizeOptions) -> tuple[Stylizer, list[Job], int, int]:
    """Everything before the first photo: model, style, inputs, output names, device. User errors raise StylerError.
    Also returns how many listed files were skipped as this style's earlier outputs, and how many files in the
    folders given are not images."""
    model = resolve_model(options.model)
    choice = choose_style(options.style, model.styles)
    not_images: list[Path] = []
    jobs = expand_inputs(arguments, options.recursive, not_images)
    own = skip_own_outputs(jobs, choice.tag)
    jobs = [job for job in jobs if job not in own]
    plan_outputs(jobs, choice.tag, options)
    stylizer = Stylizer(model, choice, pick_device(options.device), options.precision)
    return stylizer, jobs, len(own), len(not_images)


def run_jobs(stylizer: Stylizer, jobs: list[Job], options: StylizeOptions) -> Iterator[Result]:
    """One Result per job, in order; a job's failure is its Result's error, never the end of the run."""
    for job in jobs:
        started = time.perf_counter()
        try:
            size = _stylize_one(job, stylizer, options)
            yield Result(str(job.input), str(job.output), size, time.perf_counter() - started, None)
        except OwnOutput:
            yield Result(str(job.input), None, None, time.perf_counter() - started, None, skipped=True)
        except StylerError as error:
            yield Result(str(job.input), None, None, time.perf_counter() - started, str(error))
        except OSError as error:  # anything the checks above did not foresee: this file fails, the batch goes on
            reason = f"{job.input}: {os_error_text(error)}"
            yield Result(str(job.input), None, None, time.perf_counter() - started, reason)


class OwnOutput(Exception):
    """A listed file that styler wrote: skipped, not failed."""


def _stylize_one(job: Job, stylizer: Stylizer, options: StylizeOptions) -> tuple[int, int]:
    if job.error:
        raise StylerError(job.error)
    if job.input == STDIO:
        photo = read_photo(Path("<standard input>"), options.max_pixels or DEFAULT_MAX_PIXELS, sys.stdin.buffer.read())
    else:
        photo = read_photo(job.input, options.max_pixels or DEFAULT_MAX_PIXELS)
    if job.listed and photo.from_styler:  # an earlier run's output, of any style: stylizing it again snowballs
        raise OwnOutput
    photo = photo.resized(target_size(photo.size, options.scale, options.max_size))
    try:
        result = stylizer(photo, options.strength, options.preserve_color)
    except (MemoryError, RuntimeError) as error:
        # CUDA raises torch.OutOfMemoryError; the CPU allocator a plain RuntimeError "... can't allocate memory".
        if not isinstance(error, (MemoryError, torch.OutOfMemoryError)) and "allocate" not in str(error):
            raise
        raise StylerError(
            f"{job.input}: not enough memory for {photo.size[0]}x{photo.size[1]}; try --max-size"
        ) from None
    # Without --overwrite the file is put in place only if the name is still free: another run may have written it
    # since the check before the work (issue 16: two runs at once, one silently replacing the other).
    if job.to_stdout:
        sys.stdout.buffer.write(encode_photo(result, STDOUT_SUFFIX))
        sys.stdout.buffer.flush()
    else:
        write_photo(job.output, result, overwrite=options.overwrite)
    return result.size


def main(inputs: list[str], **settings) -> bool:
    """The command: stdout gets each output path (or a JSON line per file), stderr one line per failure and a summary.

    Returns True when every file was stylized.
    """
    options = StylizeOptions(**settings)
    started = time.perf_counter()
    keep_freed_memory()  # measured: a 1024x768 photo through `lite` in 110 ms instead of 150 ms
    stylizer, jobs, skipped, not_images = prepare(inputs, options)
    # The objects created by the imports (torch's above all) live until exit; frozen, the interpreter's final garbage
    # collections skip them, which takes 0.45 s off every run here (1.8 s -> 1.35 s for `import torch` alone).
    gc.freeze()
    failures = skipped_in_run = 0
    # disable=None: the bar shows only on a terminal, so pipes and logs get clean lines.
    with tqdm(total=len(jobs), unit="image", file=sys.stderr, disable=True if len(jobs) < 2 else None) as bar:
        for result in run_jobs(stylizer, jobs, options):
            skipped_in_run += result.skipped
            if result.error:
                failures += 1
                tqdm.write(f"styler: error: {result.error}", file=sys.stderr)
            if options.json_output:
                tqdm.write(result.as_json(), file=sys.stdout)
            elif result.output and result.output != str(STDIO):  # the image itself went to standard output
                tqdm.write(result.output, file=sys.stdout)
            bar.update()
    seconds = time.perf_counter() - started
    images = len(jobs) - skipped_in_run
    failed = f"; {failures} failed" if failures else ""
    skipped += skipped_in_run
    own = f"; skipped {skipped} files styler wrote (name one to stylize it again)" if skipped else ""
    others = f"; left out {not_images} files that are not images" if not_images else ""
    print(
        f"styler: stylized {images - failures} of {images} images in {seconds:.1f} s{failed}{own}{others}",
        file=sys.stderr,
    )
    return failures == 0
