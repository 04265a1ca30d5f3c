"""A training run's parts, built and checked before the first step, and one step of it.

`Training` holds the network, optimizer, loss, data and position of a run (fresh, from --init, or restored from a
checkpoint) and knows how to take a step and write a checkpoint; loop.py takes it to its last step. Several styles
train one conditional-instance-norm network (Dumoulin et al. 2017), one style per step in turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from styler.devices import cpu_has_bfloat16
from styler.errors import StylerError, under_option
from styler.io.files import one_line
from styler.io.outputs import OutputPlan, ready_folder, write_problem
from styler.memory import available_memory
from styler.model import checkpoints
from styler.model.architecture import Architecture, architecture, architecture_name
from styler.model.checkpoints import Checkpoint, checkpoint_files
from styler.model.model_files import resolve_model
from styler.model.network import TransformerNet
from styler.training.config import TrainConfig, teacher_model
from styler.training.data import PhotoFolder, ResumableSampler, Skipped, find_photos, load_style_image, make_loader
from styler.training.losses import DistillationLoss, FeatureDistillationLoss, FeatureNetwork, LossTerms, PerceptualLoss
from styler.training.processes import Processes
from styler.training.random_features import RandomFeatureNetwork
from styler.vgg16 import VGG16Features, load_vgg16_weights

RANDOM_LOSS_SEED = 0  # the random-feature loss network is the same in every run, whatever --seed says


def check_outputs(config: TrainConfig, resuming: bool) -> None:
    """Before hours of training, not after them: --out must be new (or --overwrite) and its folder writable, and
    --checkpoint-dir writable and free of another run's checkpoints."""
    assert config.out is not None and config.checkpoint_dir is not None  # a checked() config names both
    out, checkpoint_dir = Path(config.out), Path(config.checkpoint_dir)
    if out.is_dir():
        raise StylerError(f"--out {out}: is a folder; name the model file")
    ready_folder(out.parent, "--out")  # so the model, and a --resume hint's rerun, can be written there
    OutputPlan([], config.overwrite).check(out, label="--out")
    problem = write_problem(checkpoint_dir)  # created at the first checkpoint
    if problem:
        raise StylerError(f"--checkpoint-dir {checkpoint_dir}: cannot write outputs in this folder ({problem})")
    if not resuming and checkpoint_files(checkpoint_dir):
        # Keeping "the newest K" would otherwise weigh this run's checkpoints against another run's.
        raise StylerError(
            f"--checkpoint-dir {checkpoint_dir}: holds another run's checkpoints; --resume one of them, "
            "or choose another --checkpoint-dir"
        )


def build_loss(
    config: TrainConfig, style_images: list[Tensor], preview_crops: Tensor, checkpoint: Checkpoint | None
) -> tuple[nn.Module, Path | None]:
    """The loss of this run's config, and the VGG16 weights file it read (None when it reads none)."""
    vgg_source = None
    network: FeatureNetwork
    if config.loss_net == "vgg16":
        weights, vgg_source = load_vgg16_weights(Path(config.vgg_weights) if config.vgg_weights else None)
        network = VGG16Features(weights)
    elif config.loss_net == "random":
        network = random_network = RandomFeatureNetwork(RANDOM_LOSS_SEED)
        if checkpoint is not None:
            random_network.load_state_dict(checkpoint.loss_network)
        else:  # "over the content and style images": the fixed preview photos stand for the content
            random_network.calibrate([image.unsqueeze(0).float() for image in [*style_images, *preview_crops]])
    teachers: list[nn.Module] = [teacher_model(teacher).build() for teacher in config.teachers]
    loss: nn.Module
    if config.loss_net == "teacher":
        loss = DistillationLoss(teachers, config.loss_weights())
    elif teachers:
        loss = FeatureDistillationLoss(network, teachers, config.loss_weights())
    else:
        loss = PerceptualLoss(network, [image.unsqueeze(0).float() for image in style_images], config.loss_weights())
    return loss, vgg_source


def build_network(config: TrainConfig, checkpoint: Checkpoint | None) -> TransformerNet:
    """The network, initialised (or from --init); a resumed run's is restored from its checkpoint afterwards."""
    torch.manual_seed(config.seed)
    if checkpoint is None or checkpoint.architecture is None:
        arch = architecture(config.arch, config.num_styles)
    else:
        arch = Architecture.from_dict({**checkpoint.architecture, "num_styles": config.num_styles})
    network = TransformerNet(arch)
    with torch.no_grad():
        # Start from mid-grey rather than black: a black output sits far outside the photos the random features
        # are calibrated on, so the first style losses are huge and the first hundreds of steps would go into
        # learning the 0..255 range instead of the style.
        bias = network.deconv3.conv2d.bias
        assert bias is not None  # nn.Conv2d's default bias=True
        bias.fill_(127.5)
    if config.init and checkpoint is None:
        start_from(network, config.init)
    return network


def start_from(network: TransformerNet, path: Path | str) -> None:
    """Copy a model file's weights into `network` (--init): fine-tuning a style, or starting every style from a
    network trained to reconstruct photos, which keeps the content that a short run from scratch does not learn.

    The architectures must match except in the number of styles: a single-style model's normalization parameters
    start every style of a multi-style network.
    """
    try:
        model = resolve_model(str(path))  # a shipped model's name, as --model takes, or a file
    except StylerError as error:
        raise under_option("--init", path, error) from None
    wanted, given = network.arch, model.arch
    name, given_name = Path(str(path)).name, architecture_name(given)
    if replace(given, num_styles=wanted.num_styles) != wanted:
        trains = f"this run trains {architecture_name(wanted)}"
        if given_name:
            raise StylerError(f"--init {path}: {name} is a {given_name} model; use --arch {given_name} ({trains})")
        shape = f"width {given.width:g}, {given.residual_blocks} residual blocks, stem stride {given.stem_stride}"
        raise StylerError(f"--init {path}: {name}'s network ({shape}) is neither johnson nor lite ({trains})")
    if given.num_styles not in (1, wanted.num_styles):
        raise StylerError(
            f"--init {path}: {name} holds {given.num_styles} styles and this run trains {wanted.num_styles}; start "
            "from a one-style model or one with as many styles"
        )
    own = network.state_dict()
    weights = {
        key: value.expand_as(own[key]) if value.shape != own[key].shape else value
        for key, value in model.state_dict.items()
    }
    network.load_state_dict(weights)


# Lower bounds of the memory a training step needs per pixel of each crop: the tensors autograd keeps for the backward
# pass (measured with saved_tensors_hooks on 128 px crops), in the transformer network and in the loss network on its
# output. Optimizer state, the content's features and allocator slack come on top, so a run refused by these bounds
# could never fit, and one that would fit is never refused.
NETWORK_BYTES_PER_PIXEL = {"johnson": 3300, "lite": 250}
LOSS_BYTES_PER_PIXEL = {"vgg16": 3200, "random": 2400}  # distillation's teachers keep nothing for backward


def check_memory(config: TrainConfig, device: torch.device, batch: int) -> None:
    """Refuse an --image-size whose activations cannot fit, instead of being killed by the OOM killer mid-run.
    `batch`: the crops on this device at once (all processes' on the CPU, which they share)."""
    per_pixel = NETWORK_BYTES_PER_PIXEL.get(config.arch, 0) + LOSS_BYTES_PER_PIXEL.get(config.loss_net, 0)
    needed = per_pixel * config.image_size**2 * batch
    available = available_memory(device)
    if available is not None and needed > available:
        raise StylerError(
            f"--image-size {config.image_size} with --batch-size {config.batch_size} needs more than "
            f"{needed / 2**30:.1f} GiB for activations; {available / 2**30:.1f} GiB is available on {device.type}: "
            "lower --image-size (256 is the usual) or --batch-size"
        )


class Training:
    """Everything a run needs, built (and checked) before the first step."""

    def __init__(
        self, config: TrainConfig, checkpoint: Checkpoint | None, processes: Processes, device: torch.device
    ) -> None:
        self.config, self.processes, self.device = config, processes, device
        assert config.out is not None and config.checkpoint_dir is not None  # a checked() config names both
        self.out, self.checkpoint_dir = Path(config.out), Path(config.checkpoint_dir)
        if config.amp and device.type == "cpu" and not cpu_has_bfloat16():
            raise StylerError(
                "--amp on the CPU needs bfloat16 instructions (AMX or AVX-512 BF16); this CPU would run it "
                "several times slower than float32"
            )
        if config.batch_size % processes.world_size:
            raise StylerError(
                f"--batch-size {config.batch_size} does not split evenly over {processes.world_size} processes"
            )
        self.local_batch = config.batch_size // processes.world_size
        check_memory(config, device, config.batch_size if device.type == "cpu" else self.local_batch)
        check_outputs(config, resuming=checkpoint is not None)
        if checkpoint is None:
            self.style_images = [load_style_image(style, config.style_size) for style in config.styles]
        else:
            self.style_images = list(checkpoint.style_images)
        self.photos = find_photos(config)
        # --out never replaces what the run reads, under any name (symlink, hard link), --overwrite or not.
        inputs = [*config.styles, *self.photos.paths, *config.teachers, config.init, config.vgg_weights]
        OutputPlan([path for path in inputs if path], overwrite=True).check(self.out, label="--out")
        self.loss, self.vgg_source = build_loss(config, self.style_images, self.photos.preview_crops, checkpoint)
        self.network = build_network(config, checkpoint)
        layout = torch.channels_last if config.channels_last else torch.contiguous_format
        # torch accepts to(device, memory_format=...); its type stubs lack that overload.
        self.loss = self.loss.to(device, memory_format=layout)  # type: ignore[call-overload]
        self.network = self.network.to(device, memory_format=layout)  # type: ignore[call-overload]
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
        self.step, self.seconds = 0, 0.0
        if checkpoint is not None:
            self._restore(checkpoint)
        self.trained: nn.Module = self.network  # wrapped for DistributedDataParallel below
        if processes.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.trained = DistributedDataParallel(
                self.network, device_ids=[device.index] if device.type == "cuda" else None
            )
        dataset = PhotoFolder(self.photos.paths, config.image_size)
        self.sampler = ResumableSampler(dataset, processes.world_size, processes.rank, config.seed)
        self.steps_per_epoch = len(self.sampler) // self.local_batch
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.loader = make_loader(dataset, self.local_batch, self.sampler, config.workers, device.type == "cuda")

    def _restore(self, checkpoint: Checkpoint) -> None:
        try:
            self.network.load_state_dict(checkpoint.model)
            self.optimizer.load_state_dict(checkpoint.optimizer)
            self.scaler.load_state_dict(checkpoint.scaler)
            self.step, self.seconds = checkpoint.step, float(checkpoint.seconds)
            torch.set_rng_state(checkpoint.rng["torch"])
            if self.device.type == "cuda" and checkpoint.rng.get("cuda"):
                torch.cuda.set_rng_state_all(checkpoint.rng["cuda"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise StylerError(f"--resume: the checkpoint does not fit this run ({one_line(error, 160)})") from None

    # --------------------------------------------------------------------------------------- one step

    def style_for(self, step: int) -> tuple[int, Tensor | None]:
        """Styles take turns, one per step, the same in every process; None for a single-style network."""
        index = step % self.config.num_styles
        if self.config.num_styles == 1:
            return index, None
        return index, torch.full((self.local_batch,), index, dtype=torch.long, device=self.device)

    def losses(self, photos: Tensor, step: int) -> LossTerms:
        content = photos.to(self.device, torch.float32, non_blocking=True)
        if self.config.channels_last:
            content = content.contiguous(memory_format=torch.channels_last)
        index, style = self.style_for(step)
        with self.autocast():
            return self.loss(self.trained(content, style), content, index, self.style_scale(step))

    def autocast(self) -> AbstractContextManager:
        """--amp: float16 on CUDA (with the gradient scaler), bfloat16 on the CPU (same exponent range as float32,
        no scaling needed); the Gram matrices stay float32 either way (losses.gram_matrix)."""
        if not self.config.amp:
            return nullcontext()
        return torch.autocast(self.device.type, torch.float16 if self.device.type == "cuda" else torch.bfloat16)

    def style_scale(self, step: int) -> float:
        """Content first: the style weight is 0 for the first content_steps, then grows to full over style_ramp
        steps, so the network first learns to keep the photo; at full weight from the start it paints a flat relief
        (docs/training.md)."""
        step -= self.config.content_steps or 0
        ramp = self.config.style_ramp
        if step < 0:
            return 0.0
        return 1.0 if not ramp else min(1.0, step / ramp)

    def update(self, terms: LossTerms) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms.total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    # --------------------------------------------------------------------------------------- the loop

    def batches(self) -> Iterator[tuple[Tensor, list[Skipped]]]:
        """The loader's batches from this step on, epoch after epoch, up to the last step."""
        while self.step < self.total_steps:
            epoch, batch = divmod(self.step, self.steps_per_epoch)
            self.sampler.start(epoch, batch * self.local_batch)
            for item in self.loader:
                yield item
                if self.step >= self.total_steps:
                    return

    @torch.no_grad()
    def preview_grid(self) -> Tensor:
        """(1, 3, H, W): one row per preview photo, the photo then the network's result in each style."""
        photos = self.photos.preview_crops.to(self.device, torch.float32)
        columns = [photos]
        for index in range(self.config.num_styles):
            style = None if self.config.num_styles == 1 else torch.full((len(photos),), index, device=self.device)
            columns.append(self.network(photos, style).clamp(0, 255))
        rows = torch.cat(columns, dim=3)  # each photo's row: input | style 1 | style 2 ...
        return torch.cat(list(rows), dim=1).unsqueeze(0)

    def save_checkpoint(self) -> Path:
        """Write this step's checkpoint and keep the newest keep_checkpoints (rank 0 only writes)."""
        if not self.processes.is_main:
            return checkpoints.file_for(self.checkpoint_dir, self.step)
        checkpoint = Checkpoint(
            config=asdict(self.config),
            style_names=self.config.style_names,
            step=self.step,
            epoch=self.step // self.steps_per_epoch,
            seconds=self.seconds,
            model=self.network.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(),
            loss_network=self.loss.get_submodule("network").state_dict() if self.config.loss_net == "random" else {},
            style_images=self.style_images,
            rng={
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            },
            architecture=self.network.arch.to_dict(),
        )
        return checkpoints.write(self.checkpoint_dir, checkpoint, self.config.keep_checkpoints)
