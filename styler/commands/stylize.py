"""`styler stylize`: photos in, stylized photos out, one at a time, with the model loaded once.

Every file either gets a complete output of exactly its (oriented, optionally rescaled) size or one line saying why
not; the run goes on and reports failures in its exit status.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from styler import __version__
from styler.devices import check_device, pick_device
from styler.errors import StylerError
from styler.io.files import os_error_text, shown_name
from styler.io.images import (
    DEFAULT_MAX_PIXELS,
    WRITERS,
    Photo,
    encode_photo,
    read_photo,
    write_photo,
    writer_for,
)
from styler.io.inputs import STDIO, Job, expand_inputs
from styler.io.outputs import OutputPlan, names_folder, output_name, ready_folder
from styler.memory import (
    available_memory,
    default_memory_budget,
    is_out_of_memory,
    keep_freed_memory,
    parse_bytes,
)
from styler.model.model_files import (
    is_arbitrary,
    model_from_contents,
    name_shipped,
    read_model_contents,
    resolve_model_file,
)
from styler.model.out_of_core import SPILL_DTYPES
from styler.model.stylizer import (
    AUTO_PRECISION,
    PRECISIONS,
    ImageStylizer,
    Stylizer,
    check_style_images,
    choose_style,
    output_tag,
    resolved_precision,
    target_size,
)

ARBITRARY_MODEL = "arbitrary"  # the shipped arbitrary-style model: the default when a painting is given

DEFAULT_OUTPUT_SUFFIX = (
    ".png"  # for inputs whose own format styler does not write (gif, psd, ...): lossless, keeps alpha
)


@dataclass(frozen=True)
class StylizeOptions:
    model: str | None  # None: the shipped arbitrary model when paintings are given
    style: str | None = None
    style_images: tuple[str, ...] = ()  # paintings for an arbitrary-style model
    style_weights: tuple[float, ...] = ()  # one per painting (default: equal)
    style_size: int | None = None  # the paintings' long side (default: the arbitrary stylizer's)
    match_colors: bool = True  # arbitrary-style models: give the result the painting's palette (pixel statistics)
    output: str | Path | None = None  # a string keeps a trailing slash: "-o newdir/" names a folder
    output_dir: Path | None = None
    overwrite: bool = False
    max_size: int | None = None
    scale: float | None = None
    device: str = "auto"
    precision: str = AUTO_PRECISION
    strength: float = 1.0
    preserve_color: bool = False
    max_pixels: int | None = None  # None: images.DEFAULT_MAX_PIXELS
    max_memory: str | None = None  # "4G"; None: memory.default_memory_budget()
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
        if self.max_memory is not None and parse_bytes(self.max_memory) is None:
            raise StylerError(f"--max-memory {self.max_memory!r} is not a size such as 4G, 2500M or 4GiB")
        check_device(self.device)
        if self.precision not in (*PRECISIONS, AUTO_PRECISION):
            raise StylerError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)} or auto")
        if self.output is not None and self.output_dir is not None:
            raise StylerError("give either --output or --output-dir, not both")
        check_style_images(self.model, self.style_images, self.style_weights)


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
    if options.output is not None and names_folder(options.output):
        output_dir, single_output = single_output, None
    if single_output is not None:
        if len(jobs) != 1:
            raise StylerError(f"--output names one file but there are {len(jobs)} inputs; use --output-dir")
        writer_for(single_output)
    # Every output folder is created and tried before any work: a read-only -d is refused before the first photo.
    for folder in (output_dir, single_output and single_output.parent):
        if folder is not None:
            ready_folder(folder)
    plan = OutputPlan((job.input for job in jobs), options.overwrite)
    for job in jobs:
        if job.error:
            continue
        folder = output_dir / job.subfolder if output_dir is not None else None  # -r mirrors the tree under -d
        job.output = single_output or default_output(job.input, style_tag, folder)
        job.error = plan.refusal(job.output, job.input)


def default_output(input_path: Path, style_tag: str, output_dir: Path | None) -> Path:
    suffix = input_path.suffix.lower() if input_path.suffix.lower() in WRITERS else DEFAULT_OUTPUT_SUFFIX
    return output_name(input_path, style_tag, suffix, output_dir)


# ----------------------------------------------------------------------------------------------- the run


def prepare(arguments: list[str], options: StylizeOptions) -> tuple[ImageStylizer, list[Job], int, int]:
    """Everything before the first photo: model, style, inputs, output names, device. User errors raise StylerError.
    Also returns how many listed files were skipped as this style's earlier outputs, and how many files in the
    folders given are not images."""
    tag, stylizer = choose_stylizer(options, **out_of_core_settings(options))
    not_images: list[Path] = []
    jobs = expand_inputs(arguments, options.recursive, not_images)
    own = skip_own_outputs(jobs, tag)
    jobs = [job for job in jobs if job not in own]
    plan_outputs(jobs, tag, options)
    return stylizer(), jobs, len(own), len(not_images)


class StyleOptions(Protocol):
    """The options that choose the style, as stylize's and video's options both hold them."""

    @property
    def model(self) -> str | None: ...
    @property
    def style(self) -> str | None: ...
    @property
    def style_images(self) -> tuple[str, ...]: ...
    @property
    def style_weights(self) -> tuple[float, ...]: ...
    @property
    def style_size(self) -> int | None: ...
    @property
    def match_colors(self) -> bool: ...
    @property
    def device(self) -> str: ...
    @property
    def precision(self) -> str: ...


def out_of_core_settings(options: StylizeOptions) -> dict[str, Any]:
    """When a trained-style model goes out of core (model/out_of_core.py): --max-memory, and hidden knobs for tests
    and benchmarks/prints.py: out of core whatever the size, with bands of so many rows; the spill's dtype."""
    return {
        "max_memory": parse_bytes(options.max_memory) if options.max_memory else default_memory_budget(),
        "force_out_of_core": os.environ.get("STYLER_OUT_OF_CORE") == "1",
        "band_rows": _environment_knob("STYLER_BAND_ROWS", None, lambda text: int(text) if int(text) > 0 else None),
        "spill": _environment_knob(
            "STYLER_SPILL_DTYPE", "float32", lambda text: text if text in SPILL_DTYPES else None
        ),
    }


def _environment_knob(name: str, default: Any, parse: Callable[[str], Any]) -> Any:
    """A hidden knob's value from the environment (default when unset); one line when `parse` refuses it (None)."""
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = parse(text)
    except ValueError:
        value = None
    if value is None:
        raise StylerError(f"{name}={text!r} in the environment: not a valid value")
    return value


def choose_stylizer(options: StyleOptions, **stylizer_settings: Any) -> tuple[str, Callable[[], ImageStylizer]]:
    """-m, --style and --style-image (stylize's and video's): the tag that names the outputs, and the stylizer, made
    on first use. The paintings are read (and the encoder loaded) here, before any output is planned: a bad painting
    or missing VGG16 weights stop the run with nothing written. stylizer_settings: a trained-style model's further
    Stylizer settings (stylize's out-of-core ones)."""
    name = options.model or ARBITRARY_MODEL
    path = resolve_model_file(name)
    contents = read_model_contents(path)
    if is_arbitrary(contents):
        arbitrary, tag = arbitrary_stylizer(contents, path, options)
        return tag, lambda: arbitrary
    if options.style_images:
        raise StylerError(
            f"--style-image: {name} is a trained-style model, which takes no painting; "
            f"use an arbitrary-style model (-m {ARBITRARY_MODEL}) or leave out --style-image"
        )
    model = name_shipped(model_from_contents(contents, path), name)
    choice = choose_style(options.style, model.styles)

    def stylizer() -> Stylizer:
        device = pick_device(options.device)
        precision = resolved_precision(options.precision, device, arbitrary=False)
        return Stylizer(model, choice, device, precision, **stylizer_settings)

    return output_tag(model, choice.tag), functools.cache(stylizer)


def arbitrary_stylizer(contents: dict, path: Path, options: StyleOptions) -> tuple[ImageStylizer, str]:
    """The arbitrary-style stylizer with its paintings' statistics ready, and the tag that names the outputs."""
    from styler.arbitrary.model_file import arbitrary_model_from
    from styler.arbitrary.stylizer import DEFAULT_STYLE_SIZE, ArbitraryStylizer, Painting, style_tag, weights_for

    if not options.style_images:
        raise StylerError(f"{path}: an arbitrary-style model; give the painting with --style-image PAINTING")
    if options.style is not None:
        raise StylerError(
            "--style picks a style inside a multi-style model; an arbitrary-style model takes --style-image"
        )
    model = arbitrary_model_from(contents, path)
    weights = options.style_weights or (1.0,) * len(options.style_images)
    paintings = [Painting(Path(image), weight) for image, weight in zip(options.style_images, weights, strict=True)]
    paintings = [painting for painting in paintings if painting.weight > 0]
    device = pick_device(options.device)
    stylizer = ArbitraryStylizer(
        model,
        weights_for(model),
        device,
        resolved_precision(options.precision, device, arbitrary=True),
        options.style_size or DEFAULT_STYLE_SIZE,
        options.match_colors,
    )
    stylizer.set_paintings(paintings)
    return stylizer, style_tag(paintings)


def run_jobs(stylizer: ImageStylizer, jobs: list[Job], options: StylizeOptions) -> Iterator[Result]:
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


def _stylize_one(job: Job, stylizer: ImageStylizer, options: StylizeOptions) -> tuple[int, int]:
    if job.error:
        raise StylerError(job.error)
    # Decoding must fit in the memory left (a 74-byte PNG can claim 100000x100000 pixels): checked from the header.
    memory = available_memory(torch.device("cpu"))
    if job.input == STDIO:
        photo = read_photo(
            Path("<standard input>"), options.max_pixels or DEFAULT_MAX_PIXELS, sys.stdin.buffer.read(), memory=memory
        )
    else:
        photo = read_photo(job.input, options.max_pixels or DEFAULT_MAX_PIXELS, memory=memory)
    if job.listed and photo.from_styler:  # an earlier run's output, of any style: stylizing it again snowballs
        raise OwnOutput
    photo = photo.resized(target_size(photo.size, options.scale, options.max_size))
    try:
        if isinstance(stylizer, Stylizer) and stylizer.runs_out_of_core(photo.size):
            result = _stylize_out_of_core(job, stylizer, photo, options)
        else:
            result = stylizer(photo, options.strength, options.preserve_color)
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        # Only a trained-style model has an out-of-core path; an arbitrary-style one always runs whole.
        advice = "a lower --max-memory (stylizes out of core) or " if isinstance(stylizer, Stylizer) else ""
        raise StylerError(
            f"{job.input}: not enough memory for {photo.size[0]}x{photo.size[1]}; try {advice}--max-size"
        ) from None
    # Without --overwrite the file is put in place only if the name is still free: another run may have written it
    # since the check before the work, and two runs at once must not silently replace each other's outputs.
    if job.to_stdout:
        sys.stdout.buffer.write(encode_photo(result, STDOUT_SUFFIX))
        sys.stdout.buffer.flush()
    else:
        assert job.output is not None  # every job's output is chosen before any work
        write_photo(job.output, result, overwrite=options.overwrite)
    return result.size


def _stylize_out_of_core(job: Job, stylizer: Stylizer, photo: Photo, options: StylizeOptions) -> Photo:
    """A photo too large to stylize whole: pass by pass, its temporary files beside the output, and the time it took
    said on stderr (such a run takes minutes)."""
    started = time.perf_counter()
    folder = None if job.to_stdout or job.output is None else job.output.parent
    try:
        result = stylizer(photo, options.strength, options.preserve_color, spill_folder=folder, consume=True)
    except StylerError as error:
        raise StylerError(f"{job.input}: {error}") from None
    width, height = photo.size
    tqdm.write(
        f"styler: {shown_name(str(job.input))}: {width}x{height} ({width * height / 1e6:.0f} MP) stylized out of core "
        f"in {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    return result


def main(inputs: list[str], options: StylizeOptions) -> bool:
    """The command: stdout gets each output path (or a JSON line per file), stderr one line per failure and a summary.

    Returns True when every file was stylized.
    """
    started = time.perf_counter()
    keep_freed_memory()  # each layer's output reuses freed memory instead of page-faulting (docs/benchmarks.md)
    stylizer, jobs, skipped, not_images = prepare(inputs, options)
    # The objects created by the imports (torch's above all) live until exit; frozen, the interpreter's final garbage
    # collections skip them instead of walking all of torch once more on the way out.
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
                tqdm.write(shown_name(result.output), file=sys.stdout)
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
