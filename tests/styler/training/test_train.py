"""`styler train` end to end on tiny runs: 64 px photos made here, the lite network, the random-feature loss."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from helpers import (  # tests/helpers.py (pytest puts tests/ on sys.path)
    DAMAGED_DATA,
    REJECTED_BY_HEADER,
    REPOSITORY,
    stripes,
    tiny_run,
)
from PIL import Image

from styler.cli import app
from styler.errors import StylerError
from styler.model.architecture import architecture
from styler.model.checkpoints import read as read_checkpoint
from styler.model.model_files import BASE_MODEL, load_model_file, read_manifest, resolve_model
from styler.model.network import TransformerNet
from styler.training import losses
from styler.training.config import DEFAULT_WEIGHTS, RECIPE_FIELDS, LossWeights, TrainConfig
from styler.training.data import collate
from styler.training.processes import Processes
from styler.training.random_features import RandomFeatureNetwork
from styler.training.trainer import Training, start_from
from styler.vgg16 import VGG16Features

# Biases that add a per-channel constant which a later instance norm subtracts again (convolutions feeding one, and
# the residual stream, which reaches only convolutions that feed one): their gradient is zero in exact arithmetic.
BIAS_BEFORE_INSTANCE_NORM = re.compile(r"(conv[123]|res\d+\.conv[12]|deconv[12])\.conv2d\.bias|res\d+\.in2\.bias")


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return load_model_file(path).state_dict


# ----------------------------------------------------------------------------------------------- results


def test_trained_model_loads_in_stylize(run_cli, photos, style, tmp_path):
    result = run_cli(*tiny_run(photos, style, tmp_path, "--preview-every", "2"))
    assert result.exit_code == 0, result.stderr
    assert f"wrote {tmp_path / 'model.pth'} after 3 steps" in result.stderr
    model = load_model_file(tmp_path / "model.pth")
    assert model.styles == ["stripes"] and model.arch == architecture("lite")
    training = model.training
    assert training["steps"] == 3 and training["image_size"] == 64 and training["loss_network"] == "random"
    assert training["styles"] == [{"name": "stripes", "image": "stripes.png"}] and training["seconds"] > 0
    weights = ("content_weight", "style_weight", "tv_weight", "color_weight")
    assert tuple(training[name] for name in weights) == tuple(vars(DEFAULT_WEIGHTS["random"]).values())
    previews = sorted(path.name for path in (tmp_path / "checkpoints" / "previews").iterdir())
    assert previews == ["step-0000002.png", "step-0000003.png"]  # every 2 steps, and the end
    with Image.open(tmp_path / "checkpoints" / "previews" / "step-0000003.png") as grid:
        assert grid.size == (2 * 64, 4 * 64)  # 4 photos: input | output
    styled = run_cli("stylize", photos / "photo0.jpg", "--model", tmp_path / "model.pth", "-o", tmp_path / "styled.png")
    assert styled.exit_code == 0, styled.stderr
    with Image.open(tmp_path / "styled.png") as image:
        assert image.size == (80, 60)


def test_several_styles_train_one_conditional_network(run_cli, photos, tmp_path):
    style_a = stripes(tmp_path / "gold.png")
    style_b = stripes(tmp_path / "red.png", ((200, 30, 30), (250, 250, 250)))
    result = run_cli(*tiny_run(photos, style_a, tmp_path, "--style", style_b, "--preview-every", "3"))
    assert result.exit_code == 0, result.stderr
    model = load_model_file(tmp_path / "model.pth")
    assert model.styles == ["gold", "red"] and model.arch.num_styles == 2
    # each style was trained (their conditional-IN parameters moved away from the initial ones, differently)
    weight = model.state_dict["in1.weight"]
    assert not torch.equal(weight[0], weight[1]) and not torch.equal(weight[0], torch.ones_like(weight[0]))
    with Image.open(tmp_path / "checkpoints" / "previews" / "step-0000003.png") as grid:
        assert grid.size == (3 * 64, 4 * 64)  # input | gold | red
    blended = run_cli(
        "stylize",
        photos / "photo1.jpg",
        "--model",
        tmp_path / "model.pth",
        "--style",
        "gold=0.5,red=0.5",
        "-o",
        tmp_path / "blend.png",
    )
    assert blended.exit_code == 0, blended.stderr


def test_init_starts_from_a_model_file_and_a_single_style_starts_every_style(run_cli, photos, style, tmp_path):
    first = run_cli(*tiny_run(photos, style, tmp_path / "a", "--style-weight", "0", "--max-steps", "1"))
    assert first.exit_code == 0, first.stderr
    start = weights_of(tmp_path / "a" / "model.pth")
    # --max-steps 0 is refused, so compare against one step of lr 1e-12: the weights are the init's to ~1e-9.
    multi = tiny_run(photos, style, tmp_path / "b", "--style", stripes(tmp_path / "red.png", ((200, 30, 30),)))
    result = run_cli(*multi, "--init", tmp_path / "a" / "model.pth", "--max-steps", "1", "--lr", "1e-12")
    assert result.exit_code == 0, result.stderr
    model = load_model_file(tmp_path / "b" / "model.pth")
    assert model.training["init"] == "model.pth" and model.arch.num_styles == 2
    for key, value in model.state_dict.items():
        torch.testing.assert_close(value, start[key].expand_as(value), atol=1e-6, rtol=0)
    johnson = run_cli(
        *tiny_run(photos, style, tmp_path / "c", "--arch", "johnson", "--init", tmp_path / "a" / "model.pth")
    )
    expected = "model.pth is a lite model; use --arch lite (this run trains johnson)"
    assert johnson.exit_code == 2 and expected in johnson.stderr


@pytest.mark.parametrize(
    "arch, init, expected",
    [
        ("lite", "starry", "--init starry: starry is a johnson model; use --arch johnson (this run trains lite)"),
        ("johnson", "mix", "--init mix: mix holds 3 styles and this run trains 1; start from a one-style model"),
        ("lite", "{tmp}/broken.pth", "--init {tmp}/broken.pth: not a readable model file (it holds binary data"),
    ],
)
def test_an_init_that_cannot_start_the_run_says_why_in_words(run_cli, photos, style, tmp_path, arch, init, expected):
    (tmp_path / "broken.pth").write_bytes(b"\x00" * 100)
    init, expected = init.format(tmp=tmp_path), expected.format(tmp=tmp_path)
    result = run_cli(*tiny_run(photos, style, tmp_path, "--arch", arch, "--init", init))
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert expected in result.stderr and "{" not in result.stderr, result.stderr
    assert result.stderr.count(f"{init}:") == 1  # the model named once, not once by --init and again by the loader
    assert not (tmp_path / "model.pth").exists()


@pytest.mark.parametrize("max_steps", ["3", "2"])
def test_resume_with_max_steps_at_or_below_the_checkpoint_says_so_and_writes_nothing(
    run_cli, photos, style, tmp_path, max_steps
):
    assert run_cli(*tiny_run(photos, style, tmp_path)).exit_code == 0
    checkpoint = tmp_path / "checkpoints" / "step-0000003.ckpt"
    result = run_cli("train", "--resume", checkpoint, "--max-steps", max_steps, "--out", tmp_path / "again.pth")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"--resume {checkpoint}: already at step 3; --max-steps {max_steps} trains nothing" in result.stderr
    assert not (tmp_path / "again.pth").exists()


def test_style_weight_zero_computes_only_the_content_features(photos, style):
    network = RandomFeatureNetwork()
    asked = []
    original = network.forward
    network.forward = lambda images, layers=None: asked.append(layers) or original(images, layers)
    image = torch.rand(1, 3, 48, 48) * 255
    loss = losses.PerceptualLoss(network, [image], LossWeights(content=1.0, style=0.0, tv=0.0))
    asked.clear()
    terms = loss(image.clone().requires_grad_(), image)
    assert asked == [network.content_layers, network.content_layers] and terms.style.item() == 0
    terms.total.backward()


def test_loss_decreases_over_50_steps_on_a_fixed_batch(photos, style, tmp_path):
    config = TrainConfig(
        styles=(str(style),),
        data=str(photos),
        out=str(tmp_path / "m.pth"),
        checkpoint_dir=str(tmp_path / "c"),
        loss_net="random",
        arch="lite",
        image_size=64,
        batch_size=2,
        workers=0,
        lr=1e-2,
    ).checked()
    training = Training(config, None, Processes(), torch.device("cpu"))
    batch, _ = collate([training.loader.dataset[index] for index in (0, 1)])
    totals = []
    for _ in range(50):
        terms = training.losses(batch, step=0)
        training.update(terms)
        totals.append(terms.as_floats())
    assert all(np.isfinite([values["total"] for values in totals]))
    assert totals[-1]["total"] < 0.5 * totals[0]["total"]
    assert totals[-1]["style"] < 0.5 * totals[0]["style"]  # (content rises at first: the net starts mid-grey)


def test_vgg16_loss_trains_with_a_weights_file(run_cli, photos, style, tmp_path):
    layers = VGG16Features().layers.state_dict()  # random weights: the shapes are what matters here
    torch.save({f"features.{key}": value for key, value in layers.items()}, tmp_path / "vgg16.pth")
    result = run_cli(
        *tiny_run(
            photos, style, tmp_path, "--loss-net", "vgg16", "--vgg-weights", tmp_path / "vgg16.pth", "--max-steps", "2"
        )
    )
    assert result.exit_code == 0, result.stderr
    training = load_model_file(tmp_path / "model.pth").training
    assert training["loss_network"] == "vgg16" and training["vgg_weights"] == "vgg16.pth"
    assert training["content_weight"] == 1e5 and training["style_weight"] == 1e9 and training["color_weight"] == 5e8
    assert training["content_steps"] == 100 and training["style_ramp"] == 50 and training["style_size"] == 256


def test_content_first_by_default_with_vgg16_from_scratch(photos, tiny_model):
    scratch = TrainConfig(styles=("a.png",), data=str(photos), init="none").checked()
    assert (scratch.content_steps, scratch.style_ramp, scratch.init) == (100, 50, None)
    lite = TrainConfig(styles=("a.png",), data=str(photos), arch="lite").checked()
    assert (lite.content_steps, lite.init) == (100, None)  # the base model is a johnson network
    warm = TrainConfig(styles=("a.png",), data=str(photos), init=str(tiny_model)).checked()
    assert (warm.content_steps, warm.style_ramp) == (0, 50)  # an --init network already keeps the photo
    chosen = TrainConfig(styles=("a.png",), data=str(photos), content_steps=7).checked()
    assert chosen.content_steps == 7
    with pytest.raises(StylerError, match="^--content-steps -1: must be 0 or more"):
        TrainConfig(styles=("a.png",), data=str(photos), content_steps=-1).checked()


def test_johnson_runs_start_from_the_shipped_base_model_by_default(photos, style, tmp_path):
    config = TrainConfig(styles=(str(style),), data=str(photos)).checked()
    assert (config.init, config.content_steps, config.style_ramp) == (BASE_MODEL, 0, 50)
    base = resolve_model(BASE_MODEL)
    assert base.arch == architecture("johnson") and base.training["style_weight"] == 0  # it reconstructs photos
    network = TransformerNet(architecture("johnson"))
    start_from(network, config.init)
    started, shipped = network.state_dict(), base.build().state_dict()
    assert started.keys() == shipped.keys() and all(torch.equal(started[key], shipped[key]) for key in started)
    assert TrainConfig(styles=(str(style),), data=str(photos), teachers=(), loss_net="random").checked().init is None
    assert BASE_MODEL not in {entry.name for entry in read_manifest()}  # not a style: styler models does not list it


def test_style_ramp_raises_the_style_weight_from_zero(photos, style, tmp_path):
    config = TrainConfig(
        styles=(str(style),), data=str(photos), out=str(tmp_path / "m.pth"), checkpoint_dir=str(tmp_path / "c"),
        loss_net="random", arch="lite", image_size=64, batch_size=2, workers=0,
    ).checked()  # fmt: skip
    assert config.style_ramp == 0
    training = Training(replace(config, style_ramp=4), None, Processes(), torch.device("cpu"))
    batch, _ = collate([training.loader.dataset[index] for index in (0, 1)])
    with torch.no_grad():
        styles = [training.losses(batch, step).style.item() for step in (0, 2, 4, 8)]
    assert styles[0] == 0 and styles[1] == pytest.approx(styles[2] / 2, rel=1e-5) and styles[3] == styles[2] > 0
    # Content steps come first: the same ramp, three steps later.
    training.config = replace(training.config, content_steps=3)
    with torch.no_grad():
        delayed = [training.losses(batch, step).style.item() for step in (0, 3, 5, 7, 11)]
    assert delayed[:2] == [0, 0] and delayed[2] == pytest.approx(styles[1], rel=1e-5) and delayed[3:] == styles[2:]


def test_hold_out_keeps_the_listed_photos_out_of_training(photos, style, tmp_path):
    names = sorted(path.name for path in photos.iterdir())
    listed = tmp_path / "validation.txt"
    listed.write_text(f"# judged on, never trained on\n{names[0]}\n\n  {names[-1]}  # trailing comment\n")
    config = TrainConfig(
        styles=(str(style),), data=str(photos), out=str(tmp_path / "m.pth"), checkpoint_dir=str(tmp_path / "c"),
        loss_net="random", arch="lite", image_size=64, batch_size=2, workers=0, hold_out=str(listed),
    ).checked()  # fmt: skip
    training = Training(config, None, Processes(), torch.device("cpu"))
    trained = {path.name for path in training.photos.paths} | {path.name for path in training.photos.preview_paths}
    assert names[0] not in trained and names[-1] not in trained
    assert trained == set(names) - {names[0], names[-1]}
    assert config.hold_out == str(listed.resolve()) and "hold_out" in RECIPE_FIELDS  # a resumed run keeps it


def test_amp_on_the_cpu_runs_the_networks_in_bfloat16(photos, style, tmp_path, monkeypatch):
    monkeypatch.setattr("styler.training.trainer.cpu_has_bfloat16", lambda: True)  # autocast works on any x86 CPU
    config = TrainConfig(
        styles=(str(style),), data=str(photos), out=str(tmp_path / "m.pth"), checkpoint_dir=str(tmp_path / "c"),
        loss_net="random", arch="lite", image_size=64, batch_size=2, workers=0, device="cpu", amp=True,
    ).checked()  # fmt: skip
    training = Training(config, None, Processes(), torch.device("cpu"))
    batch, _ = collate([training.loader.dataset[index] for index in (0, 1)])
    with training.autocast():
        assert training.network(batch.float()).dtype == torch.bfloat16
    before = [parameter.detach().clone() for parameter in training.network.parameters()]
    terms = training.losses(batch, 0)
    assert terms.total.dtype == torch.float32 and torch.isfinite(terms.total)
    training.update(terms)
    assert all(parameter.dtype == torch.float32 for parameter in training.network.parameters())  # master weights
    assert any(not torch.equal(a, b) for a, b in zip(before, training.network.parameters(), strict=True))
    with training.autocast():
        assert training.network(batch.float()).dtype == torch.bfloat16
    training.config = replace(config, amp=False)
    with training.autocast():
        assert training.network(batch.float()).dtype == torch.float32


def test_distillation_learns_a_teachers_outputs(run_cli, photos, tiny_model, tmp_path):
    config = TrainConfig(
        teachers=(str(tiny_model),), loss_net="teacher", data=str(photos), out=str(tmp_path / "m.pth"),
        checkpoint_dir=str(tmp_path / "c"), arch="lite", image_size=64, batch_size=2, workers=0, lr=1e-2,
    ).checked()  # fmt: skip
    assert config.style_names == ["tiny"]
    training = Training(config, None, Processes(), torch.device("cpu"))
    batch, _ = collate([training.loader.dataset[index] for index in (0, 1)])
    first = training.losses(batch, step=0).content.item()
    for step in range(60):
        training.update(training.losses(batch, step))
    assert training.losses(batch, step=0).content.item() < 0.5 * first

    result = run_cli(*tiny_run(photos, photos / "photo0.jpg", tmp_path / "cli", "--teacher", tiny_model))
    assert result.exit_code == 2 and "not both" in result.stderr  # --style and --teacher
    result = run_cli("train", "--teacher", tiny_model, "--data", photos, "--out", tmp_path / "cli" / "m.pth",
                     "--checkpoint-dir", tmp_path / "cli" / "c", "--arch", "lite", "--image-size", "64",
                     "--batch-size", "2", "--workers", "0", "--max-steps", "2", "--preview-every", "0")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    model = load_model_file(tmp_path / "cli" / "m.pth")
    assert model.styles == ["tiny"] and model.training["loss_network"] == "teacher"
    assert model.training["teachers"] == ["tiny.pth"]
    assert model.training["styles"] == [{"name": "tiny", "image": "tiny.pth"}]  # the teacher names no painting
    student = run_cli("train", "--teacher", tmp_path / "cli" / "m.pth", "--data", photos, "--out", tmp_path / "s.pth",
                      "--checkpoint-dir", tmp_path / "s", "--arch", "lite", "--image-size", "64",
                      "--batch-size", "2", "--workers", "0", "--max-steps", "1", "--preview-every", "0")  # fmt: skip
    assert student.exit_code == 0, student.stderr
    assert load_model_file(tmp_path / "s.pth").training["styles"] == [{"name": "tiny", "image": "tiny.pth"}]


def test_distillation_through_vgg16_features(run_cli, photos, tiny_model, tmp_path):
    layers = VGG16Features().layers.state_dict()  # random weights: the shapes are what matters here
    torch.save({f"features.{key}": value for key, value in layers.items()}, tmp_path / "vgg16.pth")
    result = run_cli("train", "--teacher", tiny_model, "--loss-net", "vgg16", "--vgg-weights", tmp_path / "vgg16.pth",
                     "--data", photos, "--out", tmp_path / "m.pth", "--checkpoint-dir", tmp_path / "c",
                     "--arch", "lite", "--image-size", "64", "--batch-size", "2", "--workers", "0",
                     "--max-steps", "2", "--preview-every", "0")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    training = load_model_file(tmp_path / "m.pth").training
    assert training["loss_network"] == "vgg16" and training["teachers"] == ["tiny.pth"]
    assert training["style_ramp"] == 0  # the teacher's output is already stylized: nothing to learn first
    assert (training["style_weight"], training["color_weight"]) == (3e8, 0.0)  # not the painting runs' 1e9 and 5e8
    refused = run_cli("train", "--teacher", tiny_model, "--loss-net", "random", "--data", photos,
                      "--out", tmp_path / "r.pth")  # fmt: skip
    assert refused.exit_code == 2 and "--loss-net random" in refused.stderr and refused.stderr.count("\n") == 1


def test_a_multi_style_teacher_is_refused(run_cli, photos, tiny_multi_style_model, tmp_path):
    result = run_cli("train", "--teacher", tiny_multi_style_model, "--data", photos, "--out", tmp_path / "m.pth")
    assert result.exit_code == 2 and "one-style models" in result.stderr and result.stderr.count("\n") == 1


def test_a_checkpoint_stylizes_like_the_model_of_the_same_step(run_cli, photos, style, tmp_path):
    result = run_cli(*tiny_run(photos, style, tmp_path, "--checkpoint-every", "3"))
    assert result.exit_code == 0, result.stderr
    outputs = {}
    for name, model in (("model", tmp_path / "model.pth"), ("ckpt", tmp_path / "checkpoints" / "step-0000003.ckpt")):
        styled = run_cli("stylize", photos / "photo0.jpg", "-m", model, "-o", tmp_path / f"{name}.png")
        assert styled.exit_code == 0, styled.stderr
        outputs[name] = np.asarray(Image.open(tmp_path / f"{name}.png"))
    assert np.array_equal(outputs["model"], outputs["ckpt"])


# ----------------------------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_from_before_it_stored_its_architecture_resumes_as_the_network_it_trained(
    run_cli, photos, style, tmp_path
):
    result = run_cli(*tiny_run(photos, style, tmp_path, "--max-steps", "2", "--checkpoint-every", "2"))
    assert result.exit_code == 0, result.stderr
    path = tmp_path / "checkpoints" / "step-0000002.ckpt"
    contents = torch.load(path, weights_only=True)
    assert contents["architecture"] == load_model_file(tmp_path / "model.pth").arch.to_dict()
    del contents["architecture"]  # as version 1 wrote it: "lite" named the network whose stem had stride 2
    torch.save(contents | {"version": 1}, path)
    assert load_model_file(path).arch.stem_stride == 2
    result = run_cli("train", "--resume", path, "--max-steps", "3", "--out", tmp_path / "resumed.pth")
    assert result.exit_code == 0, result.stderr
    assert load_model_file(tmp_path / "resumed.pth").arch.stem_stride == 2


def test_resume_gives_the_weights_of_an_uninterrupted_run(run_cli, photos, style, tmp_path):
    # 8 photos, batch 2: 4 steps per epoch, so the resumed run crosses an epoch boundary mid-way.
    straight = tmp_path / "straight"
    result = run_cli(
        *tiny_run(photos, style, straight, "--max-steps", "7", "--checkpoint-every", "1", "--keep-checkpoints", "5")
    )
    assert result.exit_code == 0, result.stderr
    kept = sorted(path.name for path in (straight / "checkpoints").glob("*.ckpt"))
    assert kept == [f"step-{step:07d}.ckpt" for step in range(3, 8)]  # the newest 5
    resumed = tmp_path / "resumed"
    result = run_cli(
        "train",
        "--resume",
        straight / "checkpoints" / "step-0000003.ckpt",
        "--max-steps",
        "7",
        "--out",
        resumed / "model.pth",
        "--checkpoint-dir",
        resumed / "checkpoints",
    )
    assert result.exit_code == 0, result.stderr
    assert "from step 3" in result.stderr
    expected, actual = weights_of(straight / "model.pth"), weights_of(resumed / "model.pth")
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    assert load_model_file(resumed / "model.pth").training["steps"] == 7


def test_resume_keeps_the_recipe(run_cli, photos, style, tmp_path):
    assert run_cli(*tiny_run(photos, style, tmp_path, "--max-steps", "1")).exit_code == 0
    checkpoint = tmp_path / "checkpoints" / "step-0000001.ckpt"
    result = run_cli("train", "--resume", checkpoint, "--lr", "0.5")
    assert result.exit_code == 2
    assert "--lr 0.5 differs from the checkpoint's 0.001" in result.stderr


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(run_cli, photos, style, tmp_path):
    arguments = tiny_run(photos, style, tmp_path, "--max-steps", "100000", "--checkpoint-every", "5", "--workers", "1")
    # Its own session, so the signal goes to the whole process group as a terminal's Ctrl-C does (workers too).
    process = subprocess.Popen(
        [sys.executable, "-m", "styler.cli", *map(str, arguments)],
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (
            not list((tmp_path / "checkpoints").glob("*.ckpt"))
            and time.monotonic() < deadline
            and process.poll() is None
        ):
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    stopped = re.search(r"stopped at step (\d+); resume with --resume (\S+)", stderr)
    assert stopped, stderr
    step, checkpoint = int(stopped.group(1)), Path(stopped.group(2))
    assert step >= 5 and read_checkpoint(checkpoint).step == step
    assert not (tmp_path / "model.pth").exists()
    result = run_cli("train", "--resume", checkpoint, "--max-steps", str(step + 2))
    assert result.exit_code == 0, result.stderr
    assert load_model_file(tmp_path / "model.pth").training["steps"] == step + 2


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(run_cli, photos, style, tmp_path, monkeypatch):
    real_total_variation, calls = losses.total_variation, []

    def total_variation_failing_at_step_4(images):
        calls.append(1)
        return real_total_variation(images) * (float("nan") if len(calls) >= 4 else 1.0)

    monkeypatch.setattr(losses, "total_variation", total_variation_failing_at_step_4)
    result = run_cli(*tiny_run(photos, style, tmp_path, "--max-steps", "10", "--checkpoint-every", "2"))
    assert result.exit_code == 2
    error = result.stderr.strip().splitlines()[-1]
    assert "loss became non-finite at step 4" in error and "step-0000002.ckpt" in error
    assert [path.name for path in (tmp_path / "checkpoints").glob("*.ckpt")] == ["step-0000002.ckpt"]
    assert read_checkpoint(tmp_path / "checkpoints" / "step-0000002.ckpt").step == 2
    assert not (tmp_path / "model.pth").exists()


# ----------------------------------------------------------------------------------------------- bad input


def test_unreadable_photos_are_skipped_and_counted(run_cli, photos, style, tmp_path, odd_images):
    for name in REJECTED_BY_HEADER + DAMAGED_DATA:
        shutil.copy(odd_images / name, photos / name)
    # One epoch over the 10 photos that pass the header check decodes each of them, in a worker process.
    result = run_cli(*tiny_run(photos, style, tmp_path, "--max-steps", "5", "--workers", "1"))
    assert result.exit_code == 0, result.stderr
    assert f"{len(REJECTED_BY_HEADER)} unreadable skipped" in result.stderr
    for name in DAMAGED_DATA:
        assert re.search(rf"warning: skipped \S*{re.escape(name)}: damaged", result.stderr)
    assert f"{len(REJECTED_BY_HEADER) + len(DAMAGED_DATA)} unreadable files skipped" in result.stderr


BAD_ARGUMENTS = {  # case: (arguments added to a good tiny run, with {tmp} for the test's folder; expected message)
    "missing folder": (["--data", "{tmp}/nowhere"], "no such folder"),
    "empty folder": (["--data", "{tmp}/empty"], "no images"),
    "no readable photos": (["--data", "{tmp}/junk"], "none of its 1 image files is readable"),
    "too few photos": (["--batch-size", "10"], "8 readable photos, fewer than --batch-size 10"),
    "unreadable style": (["--style", "{tmp}/notes.jpg"], "notes.jpg: not an image"),
    "missing style": (["--style", "{tmp}/nope.jpg"], "nope.jpg: no such file"),
    "zero batch": (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
    "negative lr": (["--lr", "-1"], "--lr -1.0: must be a positive number"),
    "nan weight": (["--style-weight", "nan"], "--style-weight nan: must be a non-negative number"),
    "tiny images": (["--image-size", "32"], "--image-size 32: must be at least 64"),
    "odd image size": (["--image-size", "102"], "a multiple of 4 for --arch lite"),
    "amp on a cpu without bfloat16": (["--amp", "--device", "cpu"], "--amp on the CPU needs bfloat16 instructions"),
    "no vgg weights": (["--loss-net", "vgg16"], "--vgg-weights"),
    "missing hold-out list": (["--hold-out", "{tmp}/none.txt"], "--hold-out"),
    "missing checkpoint": (["--resume", "{tmp}/none.ckpt"], "no such checkpoint file"),
    "garbage checkpoint": (["--resume", "{tmp}/garbage.ckpt"], "not a readable checkpoint"),
    "checkpoint folder in use": (["--checkpoint-dir", "{tmp}/used"], "holds another run's checkpoints"),
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_bad_arguments_are_one_line_and_exit_2_before_any_work(run_cli, photos, style, tmp_path, monkeypatch, case):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-cache"))
    monkeypatch.setattr("styler.training.trainer.cpu_has_bfloat16", lambda: False)  # the EPYC case, on any machine
    for folder in ("empty", "junk", "used"):
        (tmp_path / folder).mkdir()
    (tmp_path / "junk" / "a.jpg").write_text("not a photo")
    (tmp_path / "notes.jpg").write_text("not a photo")
    (tmp_path / "garbage.ckpt").write_bytes(b"\0" * 100)
    (tmp_path / "used" / "step-0000500.ckpt").write_bytes(b"")
    changes, expected = BAD_ARGUMENTS[case]
    result = run_cli(*tiny_run(photos, style, tmp_path), *(change.format(tmp=tmp_path) for change in changes))
    assert result.exit_code == 2
    assert result.stderr.startswith("styler: error:") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr
    assert not (tmp_path / "model.pth").exists() and not (tmp_path / "checkpoints").exists()


def test_a_style_is_required(run_cli, photos):
    result = run_cli("train", "--data", photos)
    assert result.exit_code == 2 and "give at least one --style" in result.stderr


@pytest.mark.parametrize("option, value", [("--arch", "huge"), ("--device", "tpu"), ("--loss-net", "vgg19")])
def test_choice_options_refuse_other_values_before_any_work(run_cli, photos, style, tmp_path, option, value):
    result = run_cli(*tiny_run(photos, style, tmp_path), option, value)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.stderr and value in result.stderr
    assert not (tmp_path / "checkpoints").exists()
    with pytest.raises(StylerError, match=f"^{option} '{value}': choose one of"):  # the same check without the CLI
        TrainConfig(styles=(str(style),), data=str(photos), **{option[2:].replace("-", "_"): value}).checked()


def test_help_states_the_real_defaults():
    command = typer.main.get_command(app).commands["train"]
    stated = {param.name: re.search(r"\(default: ([^)]*)\)", param.help or "") for param in command.params}
    defaults = TrainConfig()
    for name in ("epochs", "batch_size", "image_size", "lr", "seed", "workers", "preview_every", "keep_checkpoints"):
        assert float(stated[name].group(1)) == getattr(defaults, name), name
    assert stated["device"].group(1) == defaults.device and stated["arch"].group(1) == defaults.arch
    assert stated["channels_last"].group(1) == "on" and defaults.channels_last
    for term in ("content", "style", "tv", "color"):
        values = re.fullmatch(r"(\S+) with vgg16, (\S+) with random", stated[f"{term}_weight"].group(1)).groups()
        expected = (getattr(DEFAULT_WEIGHTS["vgg16"], term), getattr(DEFAULT_WEIGHTS["random"], term))
        assert tuple(map(float, values)) == expected
    assert stated["content_weight"].group(1) == "1e5 with vgg16, 1 with random"  # written as a person would
    assert stated["style_ramp"].group(1) == "50 with vgg16, 0 with random"
    expected = "100 with vgg16, 0 with random; 0 with --teacher or --init, which is base by default with johnson"
    assert stated["content_steps"].group(1) == expected
    assert stated["init"].group(1) == "base, a shipped network that reconstructs photos, for --arch johnson with vgg16"
    assert float(stated["style_size"].group(1)) == defaults.style_size


# ----------------------------------------------------------------------------------------------- processes


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(run_cli, photos, style, tmp_path):
    single = run_cli(*tiny_run(photos, style, tmp_path / "one", "--batch-size", "4"))
    assert single.exit_code == 0, single.stderr
    arguments = tiny_run(photos, style, tmp_path / "two", "--batch-size", "4")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "styler.cli",
            *map(str, arguments),
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert "in 2 processes" in process.stderr
    one, two = weights_of(tmp_path / "one" / "model.pth"), weights_of(tmp_path / "two" / "model.pth")
    for key in one:
        if BIAS_BEFORE_INSTANCE_NORM.fullmatch(key):
            continue  # rounding noise in place of a zero gradient, which Adam scales up to full steps
        # Adam divides each gradient by its own size: an element whose gradient is near zero (rounding decides its
        # sign) moves by up to lr per step in either run, so weights agree to within a step; the outputs below closer.
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-3, msg=key)
    photo = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        outputs = [load_model_file(tmp_path / run / "model.pth").build()(photo) for run in ("one", "two")]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-3)
    assert load_model_file(tmp_path / "two" / "model.pth").training["processes"] == 2


# --------------------------------------------------------------------------- --out, folders, odd inputs, limits


def test_an_existing_out_is_refused_before_training_unless_overwrite(run_cli, photos, style, tmp_path):
    (tmp_path / "model.pth").write_bytes(b"last week's model")
    result = run_cli(*tiny_run(photos, style, tmp_path))
    assert result.exit_code == 2
    expected = f"styler: error: --out {tmp_path / 'model.pth'}: exists (pass --overwrite to replace it)"
    assert result.stderr.strip() == expected
    assert (tmp_path / "model.pth").read_bytes() == b"last week's model"
    assert not (tmp_path / "checkpoints").exists()  # refused before any training
    result = run_cli(*tiny_run(photos, style, tmp_path, "--overwrite"))
    assert result.exit_code == 0, result.stderr
    assert load_model_file(tmp_path / "model.pth").training["steps"] == 3


@pytest.mark.parametrize("which", ["style", "photo", "photo by a symlink"])
def test_out_never_replaces_an_input_even_with_overwrite(run_cli, photos, style, tmp_path, which):
    target = {"style": style, "photo": photos / "photo3.jpg", "photo by a symlink": tmp_path / "alias.jpg"}[which]
    if which == "photo by a symlink":
        target.symlink_to(photos / "photo3.jpg")
    before = target.read_bytes()
    result = run_cli(*tiny_run(photos, style, tmp_path, "--out", target, "--overwrite"))
    assert result.exit_code == 2
    assert "refusing to overwrite an input" in result.stderr and len(result.stderr.splitlines()) == 1
    assert target.read_bytes() == before
    assert not (tmp_path / "checkpoints").exists()


def test_out_in_missing_folders_is_written(run_cli, photos, style, tmp_path):
    out = tmp_path / "missing" / "x" / "m.pth"
    result = run_cli(*tiny_run(photos, style, tmp_path, "--out", out))
    assert result.exit_code == 0, result.stderr
    assert load_model_file(out).styles == ["stripes"]


def test_every_zero_means_no_previews_and_no_checkpoints(run_cli, photos, style, tmp_path):
    result = run_cli(*tiny_run(photos, style, tmp_path, "--max-steps", "1", "--checkpoint-every", "0"))
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "model.pth").exists()
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").rglob("*.*"))


def test_init_accepts_a_shipped_models_name(run_cli, photos, style, tmp_path, monkeypatch):
    from styler.model.model_files import manifest_entry, save_model, write_manifest
    from styler.model.network import TransformerNet

    models = tmp_path / "models"
    models.mkdir()
    save_model(models / "warm.pth", TransformerNet(architecture("lite")), ["warm"])
    write_manifest([manifest_entry(models / "warm.pth", name="warm", style_images=[])], models)
    monkeypatch.setenv("STYLER_MODELS_DIR", str(models))
    result = run_cli(*tiny_run(photos, style, tmp_path, "--init", "warm"))
    assert result.exit_code == 0, result.stderr
    assert load_model_file(tmp_path / "model.pth").training["init"] == "warm"


def test_symlinked_photo_folders_are_found_and_fifos_left_out(run_cli, photos, style, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "linked").symlink_to(photos, target_is_directory=True)
    (data / "loop").symlink_to(data, target_is_directory=True)  # a link loop must end, not recurse forever
    os.mkfifo(data / "pipe.jpg")  # opening it would block until a writer came
    result = run_cli(*tiny_run(data, style, tmp_path))
    assert result.exit_code == 0, result.stderr
    assert load_model_file(tmp_path / "model.pth").training["photos"] == 8


@pytest.mark.parametrize(
    "changes, expected",
    [
        (["--vgg-weights", "{tmp}/stripes.png"], "--vgg-weights is for --loss-net vgg16"),
        (["--data", "{tmp}/stripes.png"], "is a file; expected a folder of training photos"),
        (["--image-size", "100000"], "lower --image-size"),
        (["--init", "{tmp}"], "is a folder"),
        (["--resume", "{tmp}"], "is a folder"),
    ],
)
def test_more_bad_arguments_are_one_plain_line_before_any_work(run_cli, photos, style, tmp_path, changes, expected):
    result = run_cli(*tiny_run(photos, style, tmp_path), *(change.format(tmp=tmp_path) for change in changes))
    assert result.exit_code == 2
    assert result.stderr.startswith("styler: error:") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr
    assert not (tmp_path / "model.pth").exists() and not (tmp_path / "checkpoints").exists()
