"""`styler video`: video files in, stylized video files out (video/transcode.py does each file), sound kept."""

from __future__ import annotations

import sys
from pathlib import Path

from styler.devices import pick_device
from styler.errors import StylerError
from styler.io.files import os_error_text, shown_name
from styler.io.outputs import OutputPlan, names_folder, output_name, ready_folder
from styler.memory import keep_freed_memory
from styler.model.model_files import resolve_model
from styler.model.stylizer import Stylizer, choose_style, output_tag
from styler.video.options import VideoOptions
from styler.video.transcode import CONTAINERS, DEFAULT_SUFFIX, VideoResult, import_av, stylize_one


def plan_outputs(inputs: list[Path], tag: str, options: VideoOptions) -> list[Path]:
    """The output of each input, refusing (one line, before any work) names that would overwrite an input, each
    other or an existing file without --overwrite, and folders that cannot be written."""
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
    return [plan.check(output or output_name(source, tag, DEFAULT_SUFFIX, folder), source) for source in inputs]


def main(inputs: list[str], options: VideoOptions) -> bool:
    """The command: stdout gets each output path (or a JSON line per video), stderr one line per failure."""
    av = import_av()
    keep_freed_memory()
    sources = [Path(name).expanduser() for name in inputs]
    for source in sources:
        if not source.is_file():
            raise StylerError(f"{source}: no such file" if not source.exists() else f"{source}: not a file")
    model = resolve_model(options.model)
    choice = choose_style(options.style, model.styles)
    targets = plan_outputs(sources, output_tag(model, choice.tag), options)
    stylizer = Stylizer(model, choice, pick_device(options.device), options.precision)
    failures = 0
    for source, target in zip(sources, targets, strict=True):
        try:
            result = stylize_one(av, source, target, stylizer, options)
        except StylerError as error:
            result = VideoResult(str(source), error=str(error))
        except OSError as error:
            result = VideoResult(str(source), error=f"{target}: {os_error_text(error)}")
        if result.error:
            failures += 1
            print(f"styler: error: {result.error}", file=sys.stderr)
        if options.json_output:
            print(result.as_json(), flush=True)
        elif result.output:
            print(shown_name(result.output), flush=True)
    return failures == 0
