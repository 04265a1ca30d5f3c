"""Smoke test of `python -m benchmarks`: the scripts run and report sane numbers. No timing assertions."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPOSITORY  # tests/helpers.py (pytest puts tests/ on sys.path)

ROOT = REPOSITORY


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """One quick run of both levels (one thread, glibc's default malloc): well under a minute."""
    out = tmp_path_factory.mktemp("bench") / "latest.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--threads", "1", "--malloc", "default", "--json", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return json.loads(out.read_text())


def positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_report_has_context(report):
    assert report["machine"] and report["torch"] and report["date"]
    assert {row["level"] for row in report["rows"]} == {"kernels", "end-to-end"}


def test_kernel_rows_are_sane(report):
    rows = [r for r in report["rows"] if r["level"] == "kernels"]
    assert {r["op"] for r in rows} == {"forward", "backward", "forward+backward"}
    assert {r["layout"] for r in rows} == {"nchw", "channels_last"}
    for row in rows:
        assert all(positive_finite(row[k]) for k in ("native_ms", "ours_ms", "speedup")), row
        if row["op"] == "forward":
            assert all(positive_finite(row[k]) for k in ("ours_gbs", "copy_gbs", "fraction_of_copy")), row


def test_end_to_end_rows_are_sane(report):
    rows = [r for r in report["rows"] if r["level"] == "end-to-end"]
    assert {r["config"] for r in rows} == {"examples (torch IN, NCHW)", "styler NCHW", "styler channels_last"}
    for row in rows:
        assert all(positive_finite(row[k]) for k in ("ms", "speedup")), row
        if sys.platform == "linux":  # peak resident memory is read from /proc
            assert positive_finite(row["peak_mib"]), row
    baseline = [r for r in rows if r["config"] == "examples (torch IN, NCHW)"]
    assert all(r["speedup"] == 1.0 for r in baseline)


def test_chart_is_written(report, tmp_path):
    pytest.importorskip("matplotlib")  # the optional `bench` extra
    source, chart = tmp_path / "report.json", tmp_path / "chart.png"
    source.write_text(json.dumps(report))
    subprocess.run(
        [sys.executable, "-m", "benchmarks.chart", str(source), str(chart)], cwd=ROOT, check=True, timeout=120
    )
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_tables_hold_every_measured_case(report):
    from benchmarks.markdown import render

    text = render(report)
    kernel_cases = {("×".join(map(str, r["shape"])), r["layout"]) for r in report["rows"] if r["level"] == "kernels"}
    for shape, layout in kernel_cases:
        assert f"| {shape} | {layout} |" in text
    for task in {r["task"] for r in report["rows"] if r["level"] == "end-to-end"}:
        assert f"| {task} |" in text
    assert "nan" not in text and "inf" not in text


def test_comparisons_are_timed_in_turns():
    """Each side runs its loop (warm-up, then the timed calls) in its turn, starting one further along each turn."""
    from benchmarks.timing import medians_in_turns_ms

    calls = []
    sides = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    medians = medians_in_turns_ms(sides, turns=4, warmup=1, repeats=2, min_seconds=0.0)
    assert "".join(calls) == "aaabbbccc" + "bbbcccaaa" + "cccaaabbb" + "aaabbbccc"
    assert set(medians) == set("abc") and all(m >= 0 for m in medians.values())


# ----------------------------------------------------------------------------------------------- quality figures


def test_quality_figures_are_zero_and_one_for_the_painting_and_the_photo_themselves():
    import torch

    from benchmarks import quality
    from styler.vgg16 import VGG16Features

    torch.manual_seed(0)
    vgg = VGG16Features()  # random weights: the figures' definitions do not depend on them
    painting = torch.rand(1, 3, 64, 48) * 255  # noise, against a smooth photo-like picture
    photo = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4) * 255, size=(64, 64), mode="bicubic")
    distance = quality.StyleDistance(vgg, painting)
    assert distance(painting) == pytest.approx(0.0, abs=1e-9)
    assert distance(photo) > 0.01
    assert quality.structure(photo, photo) == pytest.approx(1.0)
    assert quality.structure(photo.flip(-1), photo) < 0.5  # other outlines
    assert quality.structure(photo * 0.5 + 20, photo) == pytest.approx(1.0)  # contrast and brightness do not count


def test_palette_distance_is_the_sliced_wasserstein_distance_of_lab_colours():
    import torch

    from benchmarks import quality

    # CIELAB of known colours: white is L 100, black L 0, sRGB red (53.24, 80.09, 67.20).
    swatches = torch.tensor([[255.0, 0, 255], [255, 0, 0], [255, 0, 0]]).view(1, 3, 1, 3)
    lab = quality.srgb_to_lab(swatches)[0, :, 0].t()
    assert lab[0].tolist() == pytest.approx([100.0, 0.0, 0.0], abs=0.01)
    assert lab[1].tolist() == pytest.approx([0.0, 0.0, 0.0], abs=0.01)
    assert lab[2].tolist() == pytest.approx([53.24, 80.09, 67.20], abs=0.02)
    grey, lighter = torch.full((1, 3, 40, 60), 119.0), torch.full((1, 3, 30, 30), 163.0)  # L 50.0 and 67.5
    # Every direction's projections differ by the same L offset times that direction's L component: the mean over
    # the 64 fixed directions of |u_L| times 17.5 (about 0.56 of it, as E|u_L| = 1/2 for a uniform unit vector).
    distance = quality.palette_distance(grey, lighter)
    assert quality.palette_distance(grey, grey) == 0.0
    assert 0.4 * 17.5 < distance < 0.7 * 17.5
    noise = torch.rand(1, 3, 300, 500) * 255
    assert quality.palette_distance(noise, noise.flip(-1)) < 1.0  # colours, not where they are
    assert quality.palette_distance(noise, grey) > 5 * quality.palette_distance(noise, noise.flip(-1))
    assert quality.palette_distance(grey, lighter) == quality.palette_distance(grey, lighter)  # fixed samples


def test_validation_photos_are_the_listed_ones_and_never_trained_on(tmp_path):
    from benchmarks import quality
    from styler.training.data import read_hold_out

    listed = read_hold_out(quality.VALIDATION_LIST)
    assert len(listed) >= 10
    for name in sorted(listed)[:3] + ["other.jpg"]:
        (tmp_path / name).write_bytes(b"")
    photos = quality.validation_photos(tmp_path)
    assert {path.name for path in photos if path.parent == tmp_path} == set(sorted(listed)[:3])
    bundled = [path for path in photos if path.parent != tmp_path]
    assert bundled and all(path.parent.name == "validation" for path in bundled)
    assert "--hold-out benchmarks/validation.txt" in (quality.ROOT / "tools" / "train.sh").read_text()


# ---------- benchmarks/gpu_check.sh, in the parts that run without a GPU ----------

GPU_CHECK = ROOT / "benchmarks" / "gpu_check.sh"


def run_gpu_check(out: Path, **env: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        ["bash", str(GPU_CHECK), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PYTHON": sys.executable, **env},
    )


def test_gpu_check_runs_every_step_into_its_folder(tmp_path):
    """Its CPU mode: the same steps (but the build, done already) with the CPU kernels, logs and results in one
    folder and a summary that names each step."""
    out = tmp_path / "gpu-check"
    result = run_gpu_check(
        out,
        GPU_CHECK_DEVICE="cpu",
        GPU_CHECK_SKIP_BUILD="1",
        GPU_CHECK_PYTEST_K="test_import_reports_devices or test_cpu_dispatch",
    )
    summary = (out / "summary.txt").read_text()
    assert result.returncode == 0, summary + result.stderr
    steps = [line.split()[1] for line in summary.splitlines() if line.startswith("OK")]
    assert steps == ["environment", "devices", "tests", "check-grad", "smoke", "benchmark"]
    assert json.loads((out / "check-grad.json").read_text())["ok"] is True
    assert json.loads((out / "bench-cpu.json").read_text())["rows"]
    assert "2 passed" in (out / "02-tests.log").read_text()
    assert (out / "pytest.xml").exists() and "all steps passed" in summary


def test_gpu_check_stops_at_its_budget(tmp_path):
    """A step that runs past what is left of the budget is cut, the later ones are skipped, and the run fails."""
    out = tmp_path / "gpu-check"
    result = run_gpu_check(out, GPU_CHECK_DEVICE="cpu", GPU_CHECK_SKIP_BUILD="1", GPU_CHECK_BUDGET_S="1")
    summary = (out / "summary.txt").read_text()
    assert result.returncode == 1
    assert "SKIPPED  environment (budget spent)" in summary and "later steps skipped" in summary


def test_gpu_check_needs_its_output_folder():
    result = subprocess.run(["bash", str(GPU_CHECK)], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "usage" in result.stderr


def test_the_prints_benchmark_measures_a_process_and_renders_its_table(tmp_path, tiny_model):
    """benchmarks/prints.py on a photo of 0.02 MP: one styler process per mode under /usr/bin/time, forced out of
    core or whole, and the markdown table of docs/benchmarks.md from its JSON."""
    if not Path("/usr/bin/time").exists():
        pytest.skip("no /usr/bin/time (GNU time) here")
    out = tmp_path / "prints.json"
    command = [sys.executable, "-m", "benchmarks.prints", "--models", str(tiny_model), "--megapixels", "0.02"]
    command += ["--modes", "whole,out-of-core", "--json", str(out)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)
    rows = json.loads(out.read_text())["rows"]
    assert [(row["mode"], row["out_of_core"], row["exit_code"]) for row in rows] == [
        ("whole", False, 0),
        ("out-of-core", True, 0),
    ]
    assert all(0.1 < row["peak_gib"] < 4 and row["seconds"] > 0 for row in rows)
    table = subprocess.run(
        [*command[:3], "--json", str(out), "--table"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    assert len(table.splitlines()) == 4 and "| out of core |" in table and "| whole image |" in table
    if importlib.util.find_spec("matplotlib") is not None:  # the chart is optional, as matplotlib is
        chart = tmp_path / "prints.png"
        subprocess.run([*command[:3], "--json", str(out), "--chart", str(chart)], cwd=ROOT, check=True, timeout=120)
        assert chart.stat().st_size > 1000


def test_quality_medians_keep_one_models_paintings_apart():
    from benchmarks import quality

    records = [
        {"model": "arbitrary", "painting": painting, "method": "arbitrary", "photo": f"{i}.jpg",
         "style_distance": base + i, "structure": 0.5, "palette_distance": 3.0}
        for painting, base in (("a.jpg", 0.0), ("b.jpg", 10.0)) for i in range(3)
    ]  # fmt: skip
    rows = quality.summarize(records)
    assert [(row["painting"], row["style_distance"], row["photos"]) for row in rows] == [
        ("a.jpg", 1, 3),
        ("b.jpg", 11, 3),
    ]
