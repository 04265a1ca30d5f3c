"""The arbitrary-style model file: the decoder's weights and what it was trained for, readable with
torch.load(weights_only=True). The encoder is not in it: it is the ImageNet VGG16 that `styler weights vgg16`
makes ready, cut at the layer the file names.

    format          "styler-arbitrary-model"
    format_version  1
    kind            "arbitrary"
    encoder         {"network": "vgg16", "layer": "relu4_1"}
    decoder         {"width": 0.5, "skips": ["relu2_1", "relu3_1"]} (skips: shallower layers it also reads; absent
                    in files from before skips, which read relu4_1 alone)
    training        the recipe: data, paintings, losses, weights, steps, seconds
    styler_version  the version that wrote it
    state_dict      the decoder's parameters (float16 to keep the file small; float32 again on load)

A training checkpoint (training.py) holds such a dict under "model", so `-m step-NNNNNNN.ckpt` works too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from styler import __version__
from styler.arbitrary.network import CONTENT_LAYER, LEVEL_LAYERS, Decoder
from styler.errors import StylerError
from styler.io.files import write_atomically
from styler.model.model_files import (
    ARBITRARY_CHECKPOINT_FORMAT,
    ARBITRARY_FORMAT,
    ARBITRARY_KIND,
    as_float32,
    load_fitting,
)

FORMAT_VERSION = 1
CHECKPOINT_FORMAT = ARBITRARY_CHECKPOINT_FORMAT


@dataclass
class ArbitraryModel:
    decoder_width: float
    state_dict: dict[str, Tensor]
    decoder_skips: tuple[str, ...] = ()
    training: dict[str, Any] = field(default_factory=dict)
    styler_version: str | None = None
    path: Path | None = None

    def build(self) -> Decoder:
        skips = f" with skips at {', '.join(self.decoder_skips)}" if self.decoder_skips else ""
        problem = f"decoder weights do not fit a width-{self.decoder_width} decoder{skips}"
        return load_fitting(Decoder(self.decoder_width, self.decoder_skips), self.state_dict, self.path, problem)


def model_dict(decoder: Decoder, training: dict[str, Any], half: bool = True) -> dict[str, Any]:
    dtype = torch.float16 if half else torch.float32
    return {
        "format": ARBITRARY_FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": ARBITRARY_KIND,
        "encoder": {"network": "vgg16", "layer": CONTENT_LAYER},
        "decoder": {"width": decoder.width, "skips": list(decoder.skips)},
        "training": dict(training),
        "styler_version": __version__,
        "state_dict": {
            key: value.detach().to("cpu", dtype).contiguous() for key, value in decoder.state_dict().items()
        },
    }


def save_arbitrary_model(path: Path, decoder: Decoder, training: dict[str, Any], half: bool = True) -> None:
    contents = model_dict(decoder, training, half)
    write_atomically(Path(path), lambda file: torch.save(contents, file))


def arbitrary_model_from(contents: dict[str, Any], path: Path) -> ArbitraryModel:
    """A loaded model file's (or checkpoint's) dict as an ArbitraryModel; any problem is one StylerError line."""
    if contents.get("format") == CHECKPOINT_FORMAT:
        contents = contents.get("model")  # type: ignore[assignment]
        if not isinstance(contents, dict):
            raise StylerError(f"{path}: checkpoint lacks its model")
    version = contents.get("format_version")
    if version != FORMAT_VERSION:
        raise StylerError(f"{path}: arbitrary model format version {version!r}; this styler reads {FORMAT_VERSION}")
    encoder, decoder = contents.get("encoder"), contents.get("decoder")
    if not isinstance(encoder, dict) or encoder.get("layer") != CONTENT_LAYER or encoder.get("network") != "vgg16":
        raise StylerError(f"{path}: made for the encoder {encoder!r}; this styler has VGG16 up to {CONTENT_LAYER}")
    width = decoder.get("width") if isinstance(decoder, dict) else None
    if not isinstance(width, int | float) or not 0 < width <= 4:
        raise StylerError(f"{path}: no valid decoder width ({width!r})")
    skips = decoder.get("skips", []) if isinstance(decoder, dict) else []
    if not isinstance(skips, list) or not all(isinstance(s, str) and s in LEVEL_LAYERS for s in skips):
        raise StylerError(f"{path}: no valid decoder skips ({skips!r}; this styler knows {', '.join(LEVEL_LAYERS)})")
    state_dict = contents.get("state_dict")
    if not isinstance(state_dict, dict):
        raise StylerError(f"{path}: 'state_dict' is not a dict of tensors")
    training = contents.get("training")
    return ArbitraryModel(
        decoder_width=float(width),
        decoder_skips=tuple(skips),
        state_dict=as_float32(state_dict, path),
        training=training if isinstance(training, dict) else {},
        styler_version=contents.get("styler_version"),
        path=path,
    )
