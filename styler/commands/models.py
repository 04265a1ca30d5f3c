"""`styler models`: the shipped models that --model accepts by name, as a table or as JSON for scripts."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from styler.model.model_files import ARBITRARY_KIND, models_dir, read_manifest


def main(json_output: bool = False, directory: Path | None = None) -> None:
    """`styler models`: the manifest as a table, or as a JSON list of entries for scripts."""
    entries = read_manifest(directory)
    if json_output:
        print(json.dumps([asdict(entry) for entry in entries], indent=2))
        return
    if not entries:
        print(f"no shipped models in {directory or models_dir()}; any model file can be given by path")
        return
    rows = [("NAME", "STYLES", "ARCHITECTURE", "FILE")]
    for entry in entries:
        arch = entry.arch
        if entry.kind == ARBITRARY_KIND:
            styles = "any painting (--style-image)"
            skips = arch.get("decoder_skips") or []
            encoder = "VGG16" if arch.get("encoder", "vgg16") == "vgg16" else f"VGG16 x{arch.get('encoder_width')}"
            shape = f"{encoder} to {arch.get('encoder_layer')}, decoder width {arch.get('decoder_width')}"
            shape += f", skips {'+'.join(skips)}" if skips else ""
        else:
            styles = ", ".join(entry.styles)
            shape = f"width {arch.get('width')}, {arch.get('residual_blocks')} blocks, stride {arch.get('stem_stride')}"
        rows.append((entry.name, styles, shape, entry.file))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1])
