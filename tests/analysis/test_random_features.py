"""`method=random_features`: the exact least-squares readout, and a tiny width sweep drawn as a curve."""

from __future__ import annotations

import json

import pytest
import torch

from overparam.cli.main import main as runner
from overparam.cli.train import train_in_process
from overparam.recipes.analysis.random_features import fit_readout


def _problem(n: int, width: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, width, generator=generator, dtype=torch.float64), \
        torch.randn(n, 3, generator=generator, dtype=torch.float64)


def test_past_interpolation_the_readout_fits_exactly_with_the_least_norm():
    phi, targets = _problem(20, 50)
    readout = fit_readout(phi, targets)
    assert torch.allclose(phi @ readout, targets, atol=1e-9)
    # Any other exact fit adds a null-space direction of phi and has a larger norm.
    null = torch.linalg.svd(phi, full_matrices=True).Vh[-1]
    other = readout + 0.5 * null[:, None]
    assert torch.allclose(phi @ other, targets, atol=1e-9)
    assert readout.norm() < other.norm()
    # The minimum-norm solution lies in the row space of phi: phi^T (phi phi^T)^{-1} targets.
    assert torch.allclose(readout, phi.T @ torch.linalg.solve(phi @ phi.T, targets), atol=1e-9)


def test_below_interpolation_it_is_ordinary_least_squares_and_ridge_has_two_equal_forms():
    phi, targets = _problem(50, 20)
    readout = fit_readout(phi, targets)
    assert torch.allclose(readout, torch.linalg.solve(phi.T @ phi, phi.T @ targets), atol=1e-9)
    assert (phi @ readout - targets).norm() > 1  # cannot interpolate 50 points with 20 features
    wide, wide_targets = _problem(20, 50)
    primal = torch.linalg.solve(wide.T @ wide + 0.3 * torch.eye(50, dtype=torch.float64), wide.T @ wide_targets)
    assert torch.allclose(fit_readout(wide, wide_targets, ridge=0.3), primal, atol=1e-9)  # the kernel form
    narrow_ridge = fit_readout(phi, targets, ridge=0.3)
    assert torch.allclose(narrow_ridge, torch.linalg.solve(phi.T @ phi + 0.3 * torch.eye(20, dtype=torch.float64),
                                                           phi.T @ targets), atol=1e-9)


def test_a_width_sweep_interpolates_past_the_sample_count_and_is_drawn_as_a_curve(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for job, width in enumerate((10, 60, 400)):
        train_in_process(["method=random_features", "random_features.train_samples=60", f"random_features.width={width}",
                          "dataset.label_noise=0.2", "hardware.threads=1"], sweep / str(job))
    summaries = [json.loads((sweep / str(j) / "summary.json").read_text()) for j in range(3)]
    assert [s["width"] for s in summaries] == [10, 60, 400] and summaries[0]["train_samples"] == 60
    assert summaries[0]["train_error"] > 0.2  # 10 features cannot fit 60 examples, 12 of them relabelled
    assert summaries[1]["train_error"] == 0 and summaries[2]["train_error"] == 0
    assert summaries[0]["label_noise"] == 0.2 and summaries[0]["labels_replaced"] > 0
    # The minimum-norm fit at the threshold has the largest norm, so the worst test squared loss.
    assert summaries[1]["test_mse"] > max(summaries[0]["test_mse"], summaries[2]["test_mse"])
    figure = tmp_path / "curve.png"
    assert runner(["table", str(sweep), "--metric", "test_error", "--rows", "random_features.width",
                   "--plot", str(figure)]) == 0
    captured = capsys.readouterr()
    assert "(line figure)" in captured.err and figure.stat().st_size > 1000
    assert "| 400 |" in captured.out


def test_random_features_refuses_more_samples_than_the_split_has(tmp_path, capsys):
    # Found at run time (the split's size is known once the data is loaded): exit 2, one line, nothing kept.
    with pytest.raises(SystemExit) as exit_info:
        runner(["train", "method=random_features", "random_features.train_samples=100000",
                f"hydra.run.dir={tmp_path / 'big'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "random_features.train_samples=100000" in err and "3600 examples" in err
    assert not (tmp_path / "big").exists()
