"""Reliability: hostile model files through the real command, a training run killed with SIGKILL, full disks and
read-only folders, and the odd-images corpus through the training loader.

The numbers these tests pin are the ones docs/reliability.md states.
"""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPOSITORY, smooth_image, stripes, tiny_run  # tests/helpers.py (pytest puts tests/ on sys.path)
from PIL import Image

from styler.io import files
from styler.model.architecture import Architecture
from styler.model.checkpoints import FILE_NAME, checkpoint_files, read
from styler.model.model_files import load_model_file, save_model
from styler.model.network import TransformerNet
from styler.training.data import PhotoFolder, ResumableSampler, make_loader, scan


def styler_command() -> list[str]:
    """The installed `styler` script, as a user runs it (python -m styler.cli where there is none)."""
    script = Path(sys.executable).with_name("styler")
    return [str(script)] if script.exists() else [sys.executable, "-m", "styler.cli"]


# PYTHONPATH: this checkout's styler, not the one an editable install points the script at.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}


# ------------------------------------------------------------------------------------- hostile model files


class CreatesMarker:
    """Unpickling this calls open(marker, "w"): code run by the file, which loading a model must never do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _wrong_shapes(path: Path, _good: bytes) -> None:
    """A bare fast_neural_style state_dict whose conv2 weight has the wrong shape."""
    state = TransformerNet(Architecture(width=0.125, residual_blocks=1)).state_dict()
    state["conv2.conv2d.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, path)


def _pickle_with_code(path: Path, _good: bytes) -> None:
    with open(path, "wb") as file:
        pickle.dump({"conv1.conv2d.weight": CreatesMarker(path.with_suffix(".ran"))}, file)


def _torch_file_with_code(path: Path, _good: bytes) -> None:
    torch.save({"format": "styler-model", "state_dict": CreatesMarker(path.with_suffix(".ran"))}, path)


BAD_MODEL_FILES = {  # name: (make(path, bytes of a good model file), what the error line says)
    "empty.pth": (lambda path, good: path.write_bytes(b""), "not a readable model file (the file is empty)"),
    "random.pth": (lambda path, good: path.write_bytes(np.random.default_rng(0).bytes(5000)), "not a readable"),
    "half.pth": (lambda path, good: path.write_bytes(good[: len(good) // 2]), "a damaged or truncated torch file"),
    "pickle-code.pth": (_pickle_with_code, "not a readable model file (not tensors and plain data: "),
    "torch-code.pth": (_torch_file_with_code, "(it refers to io.open; styler loads only tensors and plain data"),
    "wrong-shapes.pth": (_wrong_shapes, "weights do not fit its architecture (wrong shape: conv2.conv2d.weight)"),
}


@pytest.fixture(scope="module")
def bad_model_runs(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """`styler stylize photo.png --model FILE` for every bad file, the processes started together (torch's import
    dominates each run)."""
    folder = tmp_path_factory.mktemp("bad-models")
    Image.new("RGB", (16, 12), (90, 140, 200)).save(folder / "photo.png")
    torch.manual_seed(0)
    save_model(folder / "good.pth", TransformerNet(Architecture(width=0.125, residual_blocks=1)), ["x"])
    started = {}
    for name, (make, _) in BAD_MODEL_FILES.items():
        make(folder / name, (folder / "good.pth").read_bytes())
        command = [*styler_command(), "stylize", "photo.png", "--model", name, "-o", f"out-{name}.png"]
        started[name] = subprocess.Popen(
            command, cwd=folder, env=ONE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    runs = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=300)
        runs[name] = (folder, subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return runs


@pytest.mark.parametrize("name", BAD_MODEL_FILES)
def test_a_bad_model_file_is_one_line_and_exit_2(bad_model_runs, name):
    folder, run = bad_model_runs[name]
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    (line,) = run.stderr.splitlines()  # one line: no traceback, no warning
    assert line.startswith(f"styler: error: {name}: ") and BAD_MODEL_FILES[name][1] in line
    assert line.isprintable() and len(line) < 200  # no terminal escape codes, no paragraphs of torch's advice
    assert not (folder / f"out-{name}.png").exists()


@pytest.mark.parametrize("name, load", [("pickle-code.pth", pickle.load), ("torch-code.pth", torch.load)])
def test_code_in_a_model_file_does_not_run(bad_model_runs, name, load):
    folder, run = bad_model_runs[name]
    marker = (folder / name).with_suffix(".ran")
    assert run.returncode == 2 and not marker.exists()
    # The payload is live: loading the file the unsafe way does create the marker.
    with open(folder / name, "rb") as file:
        load(file, **({"weights_only": False} if load is torch.load else {}))
    assert marker.exists()
    marker.unlink()


def test_code_in_a_checkpoint_does_not_run(run_cli, tmp_path):
    marker = tmp_path / "ran"
    torch.save({"format": "styler-checkpoint", "model": CreatesMarker(marker)}, tmp_path / "evil.ckpt")
    result = run_cli("train", "--resume", tmp_path / "evil.ckpt")
    assert result.exit_code == 2 and not marker.exists()
    assert result.stderr == (
        f"styler: error: --resume {tmp_path / 'evil.ckpt'}: not a readable checkpoint (it refers to io.open; styler "
        "loads only tensors and plain data, never code)\n"
    )


# ------------------------------------------------------------------------------------- training killed


@pytest.fixture
def photos(tmp_path) -> Path:
    for index in range(8):
        smooth_image(tmp_path / "photos" / f"photo{index}.jpg", 80, 60, seed=index)
    return tmp_path / "photos"


def test_sigkill_mid_run_leaves_whole_checkpoints_and_resume_finishes(run_cli, photos, tmp_path):
    """SIGKILL cannot be caught: what is on disk at any instant must be whole checkpoints (the atomic writes leave at
    most a hidden temporary file, which no checkpoint listing picks up), and --resume of the last one finishes."""
    style = stripes(tmp_path / "stripes.png")
    arguments = tiny_run(photos, style, tmp_path, "--max-steps", "100000", "--checkpoint-every", "1")
    process = subprocess.Popen(
        [*styler_command(), *map(str, [*arguments, "--keep-checkpoints", "2"])],
        cwd=tmp_path,
        env=ONE_THREAD,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoints = tmp_path / "checkpoints"
    try:
        deadline = time.monotonic() + 120
        while len(checkpoint_files(checkpoints)) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert process.poll() is None, process.communicate()[1]
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGKILL, stderr

    for path in checkpoints.iterdir():  # checkpoints, or hidden temporaries that no listing picks up
        assert FILE_NAME.match(path.name) or (path.name.startswith(".") and path.name.endswith(".tmp")), path
    kept = checkpoint_files(checkpoints)
    assert kept
    for path in kept:
        checkpoint = read(path)
        assert f"step-{checkpoint.step:07d}.ckpt" == path.name
        assert checkpoint.model.keys() and checkpoint.optimizer["state"]
    assert not (tmp_path / "model.pth").exists()

    step = read(kept[-1]).step
    result = run_cli("train", "--resume", kept[-1], "--max-steps", str(step + 2))
    assert result.exit_code == 0, result.stderr
    assert load_model_file(tmp_path / "model.pth").training["steps"] == step + 2


# ------------------------------------------------------------------------------------- full disk, read-only


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write (styler.io.files.write_atomically) meets a full disk: the temporary file is created,
    then its descriptor is pointed at /dev/full, so each write(2), from Python or from a C encoder, fails ENOSPC."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux) to simulate a full disk")
    real_open_new = files.open_new

    def open_new(path):
        descriptor = real_open_new(path)
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, descriptor)
        os.close(full)
        return descriptor

    monkeypatch.setattr(files, "open_new", open_new)


@pytest.fixture
def read_only_file_system(monkeypatch):
    """Creating any temporary file fails as on a read-only mount (works as root too, unlike chmod)."""

    def open_new(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(files, "open_new", open_new)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """The files directly in `folder`: contents and modification times."""
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in folder.iterdir() if path.is_file()}


@pytest.mark.parametrize("extension", [".png", ".jpg", ".webp", ".tif", ".bmp"])
def test_stylize_on_a_full_disk_is_one_line_and_leaves_nothing(
    run_cli, tiny_model, make_image, tmp_path, full_disk, extension
):
    source = make_image("photo.png", 24, 16)
    (tmp_path / "out").mkdir()
    before = snapshot(tmp_path)
    result = run_cli("stylize", source, "--model", tiny_model, "-o", tmp_path / "out" / f"photo{extension}")
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if not line.startswith("styler: stylized ")]
    output = tmp_path / "out" / f"photo{extension}"
    assert errors == [f"styler: error: {output}: cannot write ([Errno 28] No space left on device)"]
    assert list((tmp_path / "out").iterdir()) == []  # no partial output, no temporary file
    assert snapshot(tmp_path) == before  # the input untouched


def test_stylize_into_a_read_only_file_system_is_one_line(
    run_cli, tiny_model, make_image, tmp_path, read_only_file_system
):
    source = make_image("photo.png", 24, 16)
    before = snapshot(tmp_path)
    result = run_cli("stylize", source, "--model", tiny_model)
    assert result.exit_code == 2
    error, summary = result.stderr.splitlines()
    assert error.startswith(f"styler: error: {tmp_path / 'photo-tiny.png'}: cannot write ([Errno 30] Read-only file ")
    assert summary.startswith("styler: stylized 0 of 1 images")
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_stylize_into_a_read_only_folder_is_one_line(run_cli, tiny_model, make_image, tmp_path):
    source = make_image("photo.png", 24, 16)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for destination in (["-d", locked], ["-d", locked / "new"], ["-o", locked / "x.png"]):
            result = run_cli("stylize", source, "--model", tiny_model, *destination)
            assert result.exit_code == 2
            (error,) = [line for line in result.stderr.splitlines() if line.startswith("styler: error:")]
            assert "Permission denied" in error and str(locked) in error
            assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_train_on_a_full_disk_stops_with_one_line(run_cli, photos, tmp_path, full_disk):
    style = stripes(tmp_path / "stripes.png")
    result = run_cli(*tiny_run(photos, style, tmp_path, "--max-steps", "2", "--checkpoint-every", "1"))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"styler: error: {tmp_path / 'checkpoints' / 'step-0000001.ckpt'}: cannot write the checkpoint "
        "(No space left on device)"
    )
    assert list((tmp_path / "checkpoints").iterdir()) == [] and not (tmp_path / "model.pth").exists()


def test_a_model_that_cannot_be_written_keeps_the_checkpoint_to_resume(run_cli, photos, tmp_path, monkeypatch):
    """--out on a disk that fills up during the run (the checkpoints elsewhere): one line naming the checkpoint, which
    --resume turns into the model once there is room."""
    import styler.training.loop

    style = stripes(tmp_path / "stripes.png")
    real_save_model = styler.training.loop.save_model

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(styler.training.loop, "save_model", full)
    result = run_cli(*tiny_run(photos, style, tmp_path, "--max-steps", "2"))
    assert result.exit_code == 2
    last = tmp_path / "checkpoints" / "step-0000002.ckpt"
    assert result.stderr.strip().splitlines()[-1] == (
        f"styler: error: --out {tmp_path / 'model.pth'}: cannot write the model (No space left on device); the "
        f"trained weights are in {last}: --resume it to write the model"
    )
    monkeypatch.setattr(styler.training.loop, "save_model", real_save_model)
    result = run_cli("train", "--resume", last)
    assert result.exit_code == 0, result.stderr
    assert load_model_file(tmp_path / "model.pth").training["steps"] == 2


# ------------------------------------------------------------------------------------- odd images, training side

# What the training loader makes of ../shared/data/odd-images (59 files; the stylize side is pinned per file by
# test_stylize.py::test_every_odd_image_gives_an_output_or_one_clear_line).
NOT_TRAINING_FORMATS = 12  # gif, ico, psd, avif, jp2, mpo, ppm, .bin: not looked at by the training loader
REFUSED_BY_HEADER = {
    "bmp_badbitcount.bmp",
    "broken.png",
    "empty.jpg",
    "png_decompression_dos.png",
    "text_not_image.jpg",
    "unknown_compression_method.png",
}
DAMAGED_WHEN_DECODED = {
    "broken_data_stream.png",
    "truncated_end_chunk.png",
    "truncated_image.png",
    "truncated_jpeg.jpg",
}
TRAINED_ON = 37


def test_odd_images_through_the_training_loader(odd_images):
    usable, skipped = scan(odd_images)
    assert len(list(odd_images.iterdir())) == NOT_TRAINING_FORMATS + len(usable) + len(skipped)
    assert {Path(entry.path).name for entry in skipped} == REFUSED_BY_HEADER
    dataset = PhotoFolder(usable, 64)
    sampler = ResumableSampler(dataset, num_replicas=1, rank=0, seed=0)
    sampler.start(epoch=0, skip=0)
    damaged, photos = set(), 0
    for batch, entries in make_loader(dataset, 1, sampler, workers=0):
        assert batch.shape == (1, 3, 64, 64) and batch.dtype == torch.uint8
        damaged |= {Path(entry.path).name for entry in entries}
        photos += 1
    assert damaged == DAMAGED_WHEN_DECODED
    assert photos == len(usable)  # each damaged file was replaced by the next readable photo
    assert len(usable) - len(DAMAGED_WHEN_DECODED) == TRAINED_ON


# ------------------------------------------------------------------------------------- memory

MEASURE_PEAK = """
import resource, sys
from styler.cli import app
try:
    app(sys.argv[1:])
finally:
    print(f"peak-rss-kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
"""


def test_a_12_megapixel_photo_through_lite_stays_under_2_gib(tmp_path):
    """4000x3000 on the CPU through an untrained `lite` network: peak RSS 1.5 GiB here, 2.1 GiB before inference
    normalized in place and gathered the full-resolution deconv3's padded input in bands (docs/reliability.md)."""
    from styler.model.architecture import architecture

    photo = smooth_image(tmp_path / "big.jpg", 4000, 3000, seed=0)
    torch.manual_seed(0)
    save_model(tmp_path / "lite.pth", TransformerNet(architecture("lite")), ["lite"])
    run = subprocess.run(
        [sys.executable, "-c", MEASURE_PEAK, "stylize", photo, "--model", tmp_path / "lite.pth", "--device", "cpu"],
        env=ONE_THREAD,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    with Image.open(tmp_path / "big-lite.jpg") as output:
        assert output.size == (4000, 3000)
    peak_gib = int(run.stderr.rsplit("peak-rss-kib=", 1)[1]) / 2**20
    assert peak_gib < 2.0, f"peak RSS {peak_gib:.2f} GiB"


# -------------------------------------------------------------------------------- interrupts and temporary files


def test_an_interrupt_just_after_the_temporary_file_is_created_removes_it(tmp_path, monkeypatch):
    """Ctrl-C can land between the call that creates the temporary file and the code that would clean it up (seen:
    0-byte `.NAME.xxxx.tmp` files); the name must be known, and removed, whatever the moment."""
    real_open = os.open

    def open_then_interrupt(path, flags, *args, **kwargs):
        descriptor = real_open(path, flags, *args, **kwargs)
        if str(path).endswith(".tmp"):
            os.close(descriptor)
            raise KeyboardInterrupt
        return descriptor

    monkeypatch.setattr(os, "open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        files.write_atomically(tmp_path / "out.bin", lambda file: file.write(b"data"))
    assert list(tmp_path.iterdir()) == []


def test_a_temporary_name_fits_beside_a_long_output_name(tmp_path):
    output = tmp_path / ("x" * 250 + ".png")  # a legal name; ".NAME.random.tmp" of it would not be
    files.write_atomically(output, lambda file: file.write(b"data"))
    assert [path.name for path in tmp_path.iterdir()] == [output.name] and output.read_bytes() == b"data"


def test_sigterm_stops_stylize_like_ctrl_c_leaving_only_complete_outputs(tiny_model, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(300):
        Image.fromarray(np.full((48, 64, 3), index % 256, np.uint8)).save(photos / f"p{index:03d}.png")
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "styler.cli", "stylize", str(photos), "-m", str(tiny_model), "-d", str(out)],
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},  # this checkout's styler, not an installed one
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        process.stdout.readline()  # the first output is written: the run is in its loop
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().endswith("styler: terminated"), stderr
    written = sorted(out.iterdir())
    assert written and all(path.name.endswith("-tiny.png") for path in written)  # no hidden temporary file
    for path in written:
        with Image.open(path) as image:
            image.load()  # complete, not truncated
