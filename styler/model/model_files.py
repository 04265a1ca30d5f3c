"""Model files, the models/ manifest, and turning either into a ready network.

A styler model file is a `torch.save`d dict, readable with `torch.load(weights_only=True)` (no pickled code):

    format          "styler-model"
    format_version  1
    arch            Architecture.to_dict(): width, residual_blocks, stem_stride, num_styles
    styles          list of style names, one per style index (len == arch["num_styles"])
    training        free-form JSON-like metadata: style images, image size, loss network and weights, steps, seconds
    styler_version  the styler version that wrote it
    state_dict      the network's parameters (float32, or float16 to halve the file; float32 again on load)

A bare state_dict as written by pytorch/examples fast_neural_style loads too: its architecture is read from the
tensor shapes, its style is named after the file, and the legacy instance-norm running statistics are dropped.

models/manifest.json lists the shipped models: {"manifest_version": 1, "models": [entry, ...]} with each entry
as ManifestEntry below. torch is imported inside the functions that need it, so `styler models` answers at once.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from styler import __version__
from styler.errors import StylerError
from styler.io.files import sha256_of, unloadable_reason, write_atomically
from styler.model import checkpoints
from styler.model.architecture import Architecture

if TYPE_CHECKING:
    from torch import Tensor, nn

    from styler.model.network import TransformerNet

M = TypeVar("M", bound="nn.Module")  # load_fitting returns the module it was given

FORMAT = "styler-model"
FORMAT_VERSION = 1
# Arbitrary-style models (styler/arbitrary/model_file.py) and their training checkpoints: recognised here so that a
# command given one by name or path can tell the user it needs a painting, or hand it to styler.arbitrary.
ARBITRARY_FORMAT = "styler-arbitrary-model"
ARBITRARY_CHECKPOINT_FORMAT = "styler-arbitrary-checkpoint"
ARBITRARY_KIND = "arbitrary"
ENCODER_FORMAT = "styler-small-encoder"  # distill-encoder's output (arbitrary/distill.py)
ENCODER_CHECKPOINT_FORMAT = "styler-small-encoder-checkpoint"
STYLE_KIND = "style"
MANIFEST_VERSION = 1
MODELS_DIR_VARIABLE = "STYLER_MODELS_DIR"

# pytorch/examples models were saved when InstanceNorm2d tracked running statistics; the network never uses them.
LEGACY_KEY = re.compile(r"(^|\.)in\d+\.(running_mean|running_var|num_batches_tracked)$")
RESIDUAL_KEY = re.compile(r"^res(\d+)\.conv1\.conv2d\.weight$")


@dataclass
class StyleModel:
    """A loaded model file: everything needed to build the network and name its outputs."""

    arch: Architecture
    styles: list[str]
    state_dict: dict[str, Tensor]
    training: dict[str, Any] = field(default_factory=dict)
    styler_version: str | None = None
    path: Path | None = None
    shipped_name: str | None = None  # the manifest's name, for a shipped model

    @property
    def name(self) -> str:
        """What the user calls it: a shipped model's name, else the model file's name without its extension."""
        return self.shipped_name or (self.path.stem if self.path else self.styles[0])

    def build(self) -> TransformerNet:
        """The network in eval mode with these weights (float32, CPU)."""
        from styler.model.network import TransformerNet

        problem = "weights do not fit its architecture"
        return load_fitting(TransformerNet(self.arch), self.state_dict, self.path, problem)


def load_fitting(module: M, state_dict: dict, path: Path | None, problem: str) -> M:
    """`module` in eval mode with `state_dict` loaded, or one StylerError line naming what does not fit: checked
    here rather than by load_state_dict, whose error is many lines of PyTorch text."""
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state_dict.items()}
    if expected != found:
        raise StylerError(f"{path or 'model'}: {problem} ({_describe_mismatch(expected, found)})")
    module.load_state_dict(state_dict)
    return module.eval()


def _describe_mismatch(expected: dict[str, tuple], found: dict[str, tuple]) -> str:
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    wrong = sorted(key for key in expected.keys() & found.keys() if expected[key] != found[key])
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            parts.append(f"{label}: {', '.join(keys[:3])}{more}")
    return "; ".join(parts)


def save_model(
    path: Path,
    network: TransformerNet,
    styles: list[str],
    training: dict[str, Any] | None = None,
    half: bool = False,
    overwrite: bool = True,
) -> None:
    """Write a model file atomically (a crash leaves the old file or none, never half a file); overwrite=False
    raises OutputExists instead of replacing a file that is at `path` when the new one is ready."""
    import torch

    if len(styles) != network.arch.num_styles:
        raise StylerError(f"{len(styles)} style names for a network with {network.arch.num_styles} styles")
    dtype = torch.float16 if half else torch.float32
    state_dict = {key: value.detach().to("cpu", dtype).contiguous() for key, value in network.state_dict().items()}
    contents = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": network.arch.to_dict(),
        "styles": list(styles),
        "training": dict(training or {}),
        "styler_version": __version__,
        "state_dict": state_dict,
    }
    write_atomically(Path(path), lambda file: torch.save(contents, file), overwrite=overwrite)


def load_model_file(path: Path) -> StyleModel:
    """Read a styler model file or a bare pytorch/examples state_dict; any problem is one StylerError line."""
    path = Path(path)
    return model_from_contents(read_model_contents(path), path)


def is_arbitrary(contents: Any) -> bool:
    """Whether read_model_contents' result is an arbitrary-style model (or its training checkpoint)."""
    return isinstance(contents, dict) and contents.get("format") in (ARBITRARY_FORMAT, ARBITRARY_CHECKPOINT_FORMAT)


def read_model_contents(path: Path) -> Any:
    """A model file's raw contents, loaded without running pickled code; any problem is one StylerError line."""
    import torch

    path = Path(path)
    if path.is_dir():
        raise StylerError(f"{path}: is a folder; expected a model file (.pth)")
    if not path.is_file():
        raise StylerError(f"{path}: no such model file" if not path.exists() else f"{path}: not a regular file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. about old pickle protocols: the error line below says enough
            contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for non-model bytes; all mean "not a model file"
        expected = "a model written by `styler train` or a fast_neural_style state_dict"
        reason = unloadable_reason(path, error, expected)
        raise StylerError(f"{path}: not a readable model file ({reason})") from None
    return contents


def model_from_contents(contents: Any, path: Path) -> StyleModel:
    """A single- or multi-style model from read_model_contents' result."""
    if is_arbitrary(contents):
        raise StylerError(
            f"{path}: an arbitrary-style model, which needs a painting: "
            "`styler stylize`, `styler grid` and `styler video` take one with --style-image"
        )
    if isinstance(contents, dict) and contents.get("format") == FORMAT:
        model = _from_styler_dict(contents, path)
    elif isinstance(contents, dict) and contents.get("format") == checkpoints.FORMAT:
        model = _from_checkpoint(contents, path)
    elif isinstance(contents, dict) and "conv1.conv2d.weight" in contents:
        model = _from_bare_state_dict(contents, path)
    else:
        raise StylerError(f"{path}: not a styler model file nor a fast_neural_style state_dict")
    return model


def _from_styler_dict(contents: dict, path: Path) -> StyleModel:
    version = contents.get("format_version")
    if version != FORMAT_VERSION:
        raise StylerError(f"{path}: model format version {version!r}; this styler reads version {FORMAT_VERSION}")
    try:
        arch = Architecture.from_dict(contents["arch"])
        styles, state_dict = contents["styles"], contents["state_dict"]
    except KeyError as missing:
        raise StylerError(f"{path}: model file lacks {missing}") from None
    except StylerError as error:
        raise StylerError(f"{path}: {error}") from None
    if not (
        isinstance(styles, list) and len(styles) == arch.num_styles and all(isinstance(s, str) and s for s in styles)
    ):
        raise StylerError(f"{path}: 'styles' should list {arch.num_styles} style name(s), found {styles!r}")
    if not isinstance(state_dict, dict):
        raise StylerError(f"{path}: 'state_dict' is not a dict of tensors")
    training = contents.get("training")
    return StyleModel(
        arch=arch,
        styles=styles,
        state_dict=as_float32(state_dict, path),
        training=training if isinstance(training, dict) else {},
        styler_version=contents.get("styler_version"),
        path=path,
    )


def _from_checkpoint(contents: dict, path: Path) -> StyleModel:
    """A training checkpoint as a model: try a style while its run goes on (`stylize -m .../step-0000500.ckpt`)."""
    checkpoint = checkpoints.Checkpoint.from_dict(contents, path, flag="")
    names = checkpoint.style_names
    try:
        if checkpoint.architecture is None:
            raise StylerError(f"unknown architecture {checkpoint.config.get('arch')!r}")
        arch = Architecture.from_dict({**checkpoint.architecture, "num_styles": len(names)})
    except StylerError as error:
        raise StylerError(f"{path}: {error}") from None
    training = {"checkpoint": path.name, "steps": checkpoint.step, "loss_network": checkpoint.config.get("loss_net")}
    return StyleModel(
        arch=arch,
        styles=list(checkpoint.style_names),
        state_dict=as_float32(checkpoint.model, path),
        training=training,
        styler_version=checkpoint.styler_version,
        path=path,
    )


def _from_bare_state_dict(state_dict: dict, path: Path) -> StyleModel:
    """pytorch/examples saves only tensors; the shapes tell the widths, block count and (conditional) styles."""
    kept = as_float32({key: value for key, value in state_dict.items() if not LEGACY_KEY.search(key)}, path)
    first_conv, first_norm = kept["conv1.conv2d.weight"], kept.get("in1.weight")
    blocks = sum(1 for key in kept if RESIDUAL_KEY.match(key))
    num_styles = first_norm.shape[0] if first_norm is not None and first_norm.dim() == 2 else 1
    try:
        arch = Architecture(width=first_conv.shape[0] / 32, residual_blocks=blocks, num_styles=num_styles)
    except StylerError as error:
        raise StylerError(f"{path}: cannot read an architecture from its tensors ({error})") from None
    styles = [path.stem] if num_styles == 1 else [f"style{index}" for index in range(num_styles)]
    return StyleModel(arch=arch, styles=styles, state_dict=kept, training={"source": "bare state_dict"}, path=path)


def as_float32(state_dict: dict, path: Path) -> dict:
    import torch

    converted = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise StylerError(f"{path}: entry {key!r} is not a floating-point tensor")
        value = value.float()
        if not torch.isfinite(value).all():
            raise StylerError(f"{path}: entry {key!r} holds NaN or infinite weights (a diverged training run?)")
        converted[key] = value
    return converted


# ----------------------------------------------------------------------------------------------- the manifest


@dataclass
class ManifestEntry:
    """One shipped model in models/manifest.json."""

    name: str  # what a user types: --model starry
    file: str  # model file, relative to the models folder
    sha256: str  # of that file; checked before loading a shipped model
    styles: list[str]  # style names inside the model, in style-index order
    style_images: list[dict[str, str]]  # per style: {"name", "file", "title", "artist", "licence", "source"}
    arch: dict[str, Any]  # Architecture.to_dict()
    training: dict[str, Any]  # recipe: loss network, weights, image size, steps, seconds, data
    styler_version: str  # the version that trained it
    description: str = ""
    kind: str = STYLE_KIND  # "style": its styles are inside; "arbitrary": any painting, given with --style-image

    @classmethod
    def from_dict(cls, values: Any, manifest: Path) -> ManifestEntry:
        try:
            entry = cls(**values)
        except TypeError as error:
            raise StylerError(f"{manifest}: bad model entry {values!r:.80}: {error}") from None
        if not re.fullmatch(r"[0-9a-f]{64}", entry.sha256 or ""):
            raise StylerError(f"{manifest}: model {entry.name!r} has no valid sha256")
        return entry


# Where the shipped models are: installed, the wheel carries the repository's models/ folder as this package folder
# (pyproject.toml maps it); in a source checkout they are read from models/ itself, the one copy kept in git.
INSTALLED_MODELS = Path(__file__).resolve().parent / "shipped"
SOURCE_MODELS = Path(__file__).resolve().parents[2] / "models"


def models_dir() -> Path:
    """The shipped models: $STYLER_MODELS_DIR, else those installed with the package, else the checkout's models/."""
    configured = os.environ.get(MODELS_DIR_VARIABLE)
    if configured:
        return Path(configured)
    return INSTALLED_MODELS if (INSTALLED_MODELS / "manifest.json").is_file() else SOURCE_MODELS


def read_manifest(directory: Path | None = None) -> list[ManifestEntry]:
    """The entries of <directory>/manifest.json; no manifest means no shipped models."""
    manifest = (directory or models_dir()) / "manifest.json"
    if not manifest.is_file():
        return []
    try:
        contents = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StylerError(f"{manifest}: unreadable manifest ({error})") from None
    if not (isinstance(contents, dict) and contents.get("manifest_version") == MANIFEST_VERSION):
        raise StylerError(f'{manifest}: expected {{"manifest_version": {MANIFEST_VERSION}, "models": [...]}}')
    return [ManifestEntry.from_dict(values, manifest) for values in contents.get("models", [])]


def write_manifest(entries: list[ManifestEntry], directory: Path | None = None) -> None:
    text = json.dumps({"manifest_version": MANIFEST_VERSION, "models": [asdict(e) for e in entries]}, indent=2)
    write_atomically((directory or models_dir()) / "manifest.json", lambda file: file.write(text.encode() + b"\n"))


def manifest_entry(
    model_file: Path, name: str, style_images: list[dict[str, str]], description: str = ""
) -> ManifestEntry:
    """An entry for a model file inside the models folder, its details read from the file itself."""
    model = load_model_file(model_file)
    return ManifestEntry(
        name=name,
        file=Path(model_file).name,
        sha256=sha256_of(model_file),
        styles=model.styles,
        style_images=style_images,
        arch=model.arch.to_dict(),
        training=model.training,
        styler_version=model.styler_version or __version__,
        description=description,
    )


# The network `styler train` starts from by default: the johnson network trained to reconstruct photos (VGG16
# content loss alone). Not a style, so not in the manifest that `styler models` and `stylize` list.
BASE_MODEL = "base"


def resolve_model(name_or_path: str, directory: Path | None = None) -> StyleModel:
    """A shipped model by manifest name (its sha256 checked), the base model by its name, or any model file by path."""
    return name_shipped(load_model_file(resolve_model_file(name_or_path, directory)), name_or_path, directory)


def name_shipped(model: StyleModel, name_or_path: str, directory: Path | None = None) -> StyleModel:
    """The model with its manifest name when `name_or_path` is a shipped model's name (outputs are named by it)."""
    if any(entry.name == name_or_path for entry in read_manifest(directory or models_dir())):
        model.shipped_name = name_or_path
    return model


def resolve_model_file(name_or_path: str, directory: Path | None = None) -> Path:
    """The file of a shipped model by manifest name (its sha256 checked), of the base model, or the path itself."""
    directory = directory or models_dir()
    if name_or_path == BASE_MODEL:
        path = directory / f"{BASE_MODEL}.pth"
        if not path.is_file():
            raise StylerError(f"the base model is missing: no {path}")
        return path
    entries = read_manifest(directory)
    for entry in entries:
        if entry.name == name_or_path:
            path = directory / entry.file
            if not path.is_file():
                raise StylerError(f"shipped model {entry.name!r} is missing its file {path}")
            if sha256_of(path) != entry.sha256:
                raise StylerError(f"{path}: does not match the sha256 in the manifest (damaged or replaced file)")
            return path
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    names = ", ".join(entry.name for entry in entries) or "none installed"
    raise StylerError(f"no model named {name_or_path!r} and no such file (shipped models: {names})")
