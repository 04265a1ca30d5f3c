"""instancenorm.check and `styler check-grad`, which prints it: verdicts, output formats and errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers import REPOSITORY  # tests/helpers.py (pytest puts tests/ on sys.path)
from typer.testing import CliRunner

import instancenorm
from instancenorm import check, reference
from styler.cli import app

runner = CliRunner()


def test_check_grad_passes_on_cpu_with_json():
    result = runner.invoke(app, ["check-grad", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    checks = {row["check"] for row in report["rows"]}
    assert {"gradcheck (x, w, b)", "forward vs float64 reference", "backward (dx, dw, db) vs reference"} <= checks
    layouts = {row["layout"] for row in report["rows"]}
    assert layouts == {"contiguous", "channels_last"}
    naive = [row for row in report["rows"] if "naive" in row["check"]]
    assert len(naive) == 1 and naive[0]["passed"] and naive[0]["max_abs_err"] > 100 * naive[0]["tolerance"]


def test_check_grad_table():
    result = runner.invoke(app, ["check-grad", "--device", "cpu"])
    assert result.exit_code == 0
    assert "max abs err" in result.stdout and "FAIL" not in result.stdout
    assert "checks pass" in result.stdout.splitlines()[-1]


class NaiveGradient(torch.autograd.Function):
    """An instance norm whose dx is the per-element formula (dw, db right): check-grad must catch it."""

    @staticmethod
    def forward(ctx, x, w=None, b=None):
        y, mean, inv_std = reference.forward(x, w, b, 1e-5)
        ctx.save_for_backward(x, w, b, mean, inv_std)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, b, mean, inv_std = ctx.saved_tensors
        _, dw, db = reference.backward(dy, x, mean, inv_std, w)

        def reduce(g, p):
            return None if p is None else (g if p.dim() == 2 else g.sum(0)).to(p.dtype)

        return reference.naive_backward(dy, inv_std, w), reduce(dw, w), reduce(db, b)


def test_check_grad_fails_on_a_wrong_backward(monkeypatch):
    monkeypatch.setattr(instancenorm, "instance_norm", lambda x, *affine, eps: NaiveGradient.apply(x, *affine))
    rows = check.run_checks("cpu")
    failed = {row.check for row in rows if not row.passed}
    assert "gradcheck (x, w, b)" in failed and "backward (dx, dw, db) vs reference" in failed
    assert runner.invoke(app, ["check-grad", "--device", "cpu"]).exit_code == 1


def test_bad_device_is_a_plain_error():
    with pytest.raises(check.DeviceError, match="must be cpu, cuda or all, not 'tpu'"):
        check.run_checks("tpu")


def test_check_does_not_import_styler():
    """instancenorm sits below styler: its check runs without styler."""
    code = "import sys, instancenorm.check; assert not any(m.startswith('styler') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPOSITORY)


def test_bad_device_is_a_user_error():
    result = runner.invoke(app, ["check-grad", "--device", "tpu"])
    assert result.exit_code == 2 and "Invalid value for '--device'" in result.stderr and "'tpu'" in result.stderr


@pytest.mark.skipif("cuda" in instancenorm.usable_devices(), reason="CUDA is usable here")
def test_cuda_without_gpu_is_a_user_error():
    result = runner.invoke(app, ["check-grad", "--device", "cuda"])
    assert result.exit_code == 2 and "cannot check CUDA kernels" in result.stderr
