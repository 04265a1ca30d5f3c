"""`styler video`: video files in, stylized video files out (video/transcode.py does each file), sound kept.

The model and the style are chosen as by `stylize` (stylize.choose_stylizer): a trained style with -m and --style,
or any painting with --style-image. Like `stylize`, a batch refuses per file: a missing input, an existing output or
one that would overwrite an input gets one line and the other videos are still written; a file named twice is
stylized once; in a batch, styler's own earlier outputs (`styler video *.mp4` run again) are skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

from styler.commands.stylize import choose_stylizer
from styler.errors import StylerError
from styler.io.files import file_identity, os_error_text, shown_name
from styler.io.outputs import OutputPlan, names_folder, output_name, ready_folder
from styler.memory import keep_freed_memory
from styler.video.options import VideoOptions
from styler.video.transcode import CONTAINERS, DEFAULT_SUFFIX, VideoResult, import_av, is_styler_output, stylize_one


def unique_inputs(names: list[str]) -> list[Path]:
    """The inputs in order, each file once under whatever names it was given."""
    seen: set[tuple[int, int]] = set()
    sources = []
    for name in names:
        source = Path(name).expanduser()
        identity = file_identity(source)
        if identity is None or identity not in seen:
            sources.append(source)
        if identity is not None:
            seen.add(identity)
    return sources


def own_outputs(av, sources: list[Path], tag: str) -> list[Path]:
    """In a batch, the inputs styler wrote: those carrying its mark, and <stem>-<tag>.* beside a given <stem>.* (the
    outputs of versions before the mark). Stylizing them again would make a-starry-starry.mp4; a video named alone
    is always stylized."""
    if len(sources) < 2:
        return []
    stems = {(source.parent, source.stem) for source in sources}
    suffix = f"-{tag}"
    return [
        source
        for source in sources
        if source.stem.endswith(suffix)
        and (source.parent, source.stem.removesuffix(suffix)) in stems
        or source.is_file()
        and is_styler_output(av, source)
    ]


def plan_outputs(inputs: list[Path], tag: str, options: VideoOptions) -> list[tuple[Path, Path | None, str | None]]:
    """(input, output, refusal) for each input: the output named and claimed, or the one-line reason it cannot be
    (a missing input, an output that would overwrite an input, another output or, without --overwrite, an existing
    file). Mistakes about the whole run (-o naming one file for several videos, an unwritable folder) raise, before
    any work."""
    output = None if options.output is None else Path(options.output)
    folder = None
    if options.output is not None and names_folder(options.output):
        folder, output = output, None
    if output is not None and len(inputs) != 1:
        raise StylerError(f"--output names one file but there are {len(inputs)} videos; give a folder (ending in /)")
    if output is not None and output.suffix.lower() not in CONTAINERS:
        raise StylerError(f"{output}: choose a video file name ending in {', '.join(CONTAINERS)}")
    for chosen in (folder, output and output.parent):
        if chosen is not None:
            ready_folder(chosen)
    plan = OutputPlan(inputs, options.overwrite)
    planned: list[tuple[Path, Path | None, str | None]] = []
    for source in inputs:
        if not source.is_file():
            planned.append(
                (source, None, f"{source}: no such file" if not source.exists() else f"{source}: not a file")
            )
            continue
        target = output or output_name(source, tag, DEFAULT_SUFFIX, folder)
        planned.append((source, target, plan.refusal(target, source)))
    return planned


def main(inputs: list[str], options: VideoOptions) -> bool:
    """The command: stdout gets each output path (or a JSON line per video), stderr one line per failure."""
    av = import_av()
    keep_freed_memory()
    tag, stylizer = choose_stylizer(options)
    sources = unique_inputs(inputs)
    own = own_outputs(av, sources, tag)
    planned = plan_outputs([source for source in sources if source not in own], tag, options)
    failures = 0
    for source, target, refusal in planned:
        if refusal is not None or target is None:
            result = VideoResult(str(source), error=refusal)
        else:
            try:
                result = stylize_one(av, source, target, stylizer(), options)
            except StylerError as error:
                result = VideoResult(str(source), error=str(error))
            except OSError as error:
                result = VideoResult(str(source), error=f"{target}: {os_error_text(error)}")
        report(result, options)
        failures += bool(result.error)
    for source in own:
        report(VideoResult(str(source), skipped=True), options)
    if own:
        print(f"styler: skipped {len(own)} videos styler wrote (name one alone to stylize it again)", file=sys.stderr)
    return failures == 0


def report(result: VideoResult, options: VideoOptions) -> None:
    if result.error:
        print(f"styler: error: {result.error}", file=sys.stderr, flush=True)
    elif result.damaged_packets:
        print(
            f"styler: warning: {result.input}: {result.damaged_packets} damaged video packets skipped "
            "(the decoder concealed the gaps)",
            file=sys.stderr,
            flush=True,
        )
    if options.json_output:
        print(result.as_json(), flush=True)
    elif result.output:
        print(shown_name(result.output), flush=True)
