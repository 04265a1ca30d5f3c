"""The arbitrary-style model file: the decoder's weights and what it was trained for, readable with
torch.load(weights_only=True), and the small encoder's file (distill-encoder's output).

    format          "styler-arbitrary-model"
    format_version  1
    kind            "arbitrary"
    encoder         {"network": "vgg16", "layer": "relu4_1"}: the ImageNet VGG16 that `styler weights vgg16` makes
                    ready, cut at that layer, not in the file; or {"network": "vgg16-small", "layer": "relu4_1",
                    "width": 0.5, "state_dict": {...}}: the small encoder distilled from it (distill.py), carried
                    whole (float32, 3.6 MB at width 0.5), so the model needs no VGG16 to stylize
    decoder         {"width": 0.5, "skips": ["relu2_1", "relu3_1"]} (skips: shallower layers it also reads; absent
                    in files from before skips, which read relu4_1 alone)
    training        the recipe: data, paintings, losses, weights, steps, seconds
    styler_version  the version that wrote it
    state_dict      the decoder's parameters (float16 to keep the file small; float32 again on load)

A training checkpoint (training.py) holds such a dict under "model", so `-m step-NNNNNNN.ckpt` works too.

The small encoder's own file: {"format": "styler-small-encoder", "format_version": 1, "network": "vgg16-small",
"width", "training", "styler_version", "state_dict"}; its distillation checkpoints hold it under "model".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from styler import __version__
from styler.arbitrary.network import CONTENT_LAYER, LEVEL_LAYERS, Decoder, Encoder, SmallEncoder
from styler.errors import StylerError
from styler.io.files import write_atomically
from styler.model.model_files import (
    ARBITRARY_CHECKPOINT_FORMAT,
    ARBITRARY_FORMAT,
    ARBITRARY_KIND,
    ENCODER_CHECKPOINT_FORMAT,
    ENCODER_FORMAT,
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
    encoder: SmallEncoder | None = None  # the small encoder it carries; None: VGG16's, from `styler weights vgg16`

    @property
    def uses_vgg16(self) -> bool:
        return self.encoder is None

    def build(self) -> Decoder:
        skips = f" with skips at {', '.join(self.decoder_skips)}" if self.decoder_skips else ""
        problem = f"decoder weights do not fit a width-{self.decoder_width} decoder{skips}"
        return load_fitting(Decoder(self.decoder_width, self.decoder_skips), self.state_dict, self.path, problem)

    def build_encoder(self, vgg_weights: dict[str, Tensor] | None) -> Encoder | SmallEncoder:
        """The encoder the decoder was trained on: the one carried, or VGG16 with `vgg_weights` (None: random, for
        tests; stylizer.encoder_weights finds the real ones)."""
        return Encoder(vgg_weights) if self.encoder is None else copy.deepcopy(self.encoder)  # each its own dtype


def encoder_entry(encoder: SmallEncoder | None) -> dict[str, Any]:
    """The model file's "encoder" (see above)."""
    if encoder is None:
        return {"network": "vgg16", "layer": CONTENT_LAYER}
    return {"network": SMALL_NETWORK, "layer": CONTENT_LAYER, "width": encoder.width, "state_dict": _float32(encoder)}


def model_dict(
    decoder: Decoder, training: dict[str, Any], half: bool = True, encoder: SmallEncoder | None = None
) -> dict[str, Any]:
    dtype = torch.float16 if half else torch.float32
    return {
        "format": ARBITRARY_FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": ARBITRARY_KIND,
        "encoder": encoder_entry(encoder),
        "decoder": {"width": decoder.width, "skips": list(decoder.skips)},
        "training": dict(training),
        "styler_version": __version__,
        "state_dict": {
            key: value.detach().to("cpu", dtype).contiguous() for key, value in decoder.state_dict().items()
        },
    }


def save_arbitrary_model(
    path: Path, decoder: Decoder, training: dict[str, Any], half: bool = True, encoder: SmallEncoder | None = None
) -> None:
    contents = model_dict(decoder, training, half, encoder)
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
    networks = ("vgg16", SMALL_NETWORK)
    if not isinstance(encoder, dict) or encoder.get("layer") != CONTENT_LAYER or encoder.get("network") not in networks:
        described = {k: v for k, v in encoder.items() if k != "state_dict"} if isinstance(encoder, dict) else encoder
        raise StylerError(
            f"{path}: made for the encoder {described!r}; this styler has VGG16 or its small copy up to {CONTENT_LAYER}"
        )
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
        encoder=small_encoder_from(encoder, path) if encoder["network"] == SMALL_NETWORK else None,
    )


# ----------------------------------------------------------------------------------------- the small encoder

SMALL_NETWORK = "vgg16-small"
ENCODER_FORMAT_VERSION = 1


def _float32(encoder: SmallEncoder) -> dict[str, Tensor]:
    return {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in encoder.state_dict().items()}


def encoder_dict(encoder: SmallEncoder, training: dict[str, Any]) -> dict[str, Any]:
    """The small encoder's own file (float32: it is small, and its features set AdaIN's statistics)."""
    return {
        "format": ENCODER_FORMAT,
        "format_version": ENCODER_FORMAT_VERSION,
        "network": SMALL_NETWORK,
        "width": encoder.width,
        "training": dict(training),
        "styler_version": __version__,
        "state_dict": _float32(encoder),
    }


def save_encoder(path: Path, encoder: SmallEncoder, training: dict[str, Any]) -> None:
    contents = encoder_dict(encoder, training)
    write_atomically(Path(path), lambda file: torch.save(contents, file))


def small_encoder_from(contents: Any, path: Path | None) -> SmallEncoder:
    """A frozen small encoder from its file's contents or a model file's "encoder" entry; one line when it is not."""
    width = contents.get("width") if isinstance(contents, dict) else None
    state_dict = contents.get("state_dict") if isinstance(contents, dict) else None
    if not isinstance(width, int | float) or not 0 < width <= 1 or not isinstance(state_dict, dict):
        raise StylerError(f"{path}: no valid small encoder (width {width!r})")
    problem = f"encoder weights do not fit a width-{width} small encoder"
    encoder = load_fitting(SmallEncoder(float(width)), as_float32(state_dict, path or Path("encoder")), path, problem)
    return encoder.requires_grad_(False).eval()


def read_small_encoder(path: Path) -> SmallEncoder:
    """--encoder FILE: a distill-encoder output or checkpoint, or an arbitrary model that carries a small encoder."""
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for damaged or foreign files
        raise StylerError(f"--encoder {path}: not a readable encoder file ({type(error).__name__})") from None
    if isinstance(contents, dict) and contents.get("format") == ENCODER_CHECKPOINT_FORMAT:
        contents = contents.get("model")
    if isinstance(contents, dict) and contents.get("format") in (ARBITRARY_FORMAT, CHECKPOINT_FORMAT):
        model = arbitrary_model_from(contents, path)
        if model.encoder is None:
            raise StylerError(f"--encoder {path}: an arbitrary model on VGG16; it carries no small encoder")
        return model.encoder
    if not isinstance(contents, dict) or contents.get("format") != ENCODER_FORMAT:
        raise StylerError(f"--encoder {path}: not a small-encoder file (styler distill-encoder writes them)")
    return small_encoder_from(contents, path)
