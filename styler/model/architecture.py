"""The network's shape as a small value object, stored in every model file and checkpoint; no torch needed.

A width multiplier on the 32/64/128 channels, the number of residual blocks, the stride of the first 9x9 convolution
(2 halves the resolution the whole network runs at) and the number of styles (more than one selects conditional
instance norm, Dumoulin et al. 2017). `ARCHITECTURES` names the two configurations `--arch` offers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from styler.errors import StylerError


@dataclass(frozen=True)
class Architecture:
    width: float = 1.0
    residual_blocks: int = 5
    stem_stride: int = 1
    num_styles: int = 1

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.width, (int, float)) and 0 < self.width <= 8):
            problems.append(f"width {self.width!r} is not in (0, 8]")
        if not (isinstance(self.residual_blocks, int) and 0 <= self.residual_blocks <= 64):
            problems.append(f"residual_blocks {self.residual_blocks!r} is not an integer in 0..64")
        if self.stem_stride not in (1, 2):
            problems.append(f"stem_stride {self.stem_stride!r} is not 1 or 2")
        if not (isinstance(self.num_styles, int) and self.num_styles >= 1):
            problems.append(f"num_styles {self.num_styles!r} is not a positive integer")
        if problems:
            raise StylerError("bad architecture: " + "; ".join(problems))

    @property
    def channels(self) -> tuple[int, int, int]:
        """Channels after the first, second and third convolution (32, 64, 128 at width 1)."""
        base = max(1, round(32 * self.width))
        return base, 2 * base, 4 * base

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this for the output to have the input's size."""
        return 4 * self.stem_stride

    @property
    def min_size(self) -> int:
        """Smallest input side: the 3x3 reflection pads at the lowest resolution need at least 2 pixels there."""
        return 2 * self.size_multiple

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: object) -> Architecture:
        known = {field.name for field in fields(cls)}
        if not isinstance(values, dict) or not set(values) <= known:
            raise StylerError(f"bad architecture {values!r}: expected a dict with keys from {sorted(known)}")
        return cls(**values)


ARCHITECTURES = {
    # The network of the paper and of pytorch/examples: 1.68M parameters.
    "johnson": Architecture(),
    # Compact: a quarter of the channels, three residual blocks (71.5k parameters). Its stem runs at full resolution:
    # with the stem at stride 2 the last layer upsamples 2x and a texture loss finds a checkerboard there.
    "lite": Architecture(width=0.25, residual_blocks=3, stem_stride=1),
}
# What a name meant when checkpoints stored only the name (model files always stored the whole architecture); read
# by checkpoints.migrate.
FORMER_ARCHITECTURES = {"lite": Architecture(width=0.25, residual_blocks=3, stem_stride=2)}


def architecture(name: str | None, num_styles: int = 1) -> Architecture:
    """A named configuration ("johnson" or "lite") with the given number of styles."""
    if name not in ARCHITECTURES:
        raise StylerError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return Architecture(**{**ARCHITECTURES[name].to_dict(), "num_styles": num_styles})


def architecture_name(arch: Architecture) -> str | None:
    """The --arch name of `arch`'s shape (whatever its number of styles); None for a shape --arch does not offer."""
    return next(
        (name for name, known in ARCHITECTURES.items() if replace(known, num_styles=arch.num_styles) == arch), None
    )
