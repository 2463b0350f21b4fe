"""SAM and SAF in the engine: SAM's step equals a hand-computed one; SAF's term appears after the lag."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from overparam.data.bundle import DataBundle
from overparam.engine import fit

TRAIN = {"steps": 1, "epochs": None, "batch_size": 8, "eval_every": 1}
HARDWARE = {"device": "cpu", "precision": "fp32"}


def tiny_problem():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=generator), torch.randint(0, 2, (8,), generator=generator)
    data = DataBundle("toy", x, y, x, y, num_classes=2)
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2, bias=False), data


def optim(**extra):
    return {"name": "sgd", "lr": 0.5, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant", **extra}


def test_sam_step_matches_the_hand_computed_update():
    model, data = tiny_problem()
    w = model.weight.detach().clone().requires_grad_(True)
    grad = torch.autograd.grad(F.cross_entropy(data.train_x @ w.T, data.train_y), w)[0]
    perturbed = (w + 0.2 * grad / grad.norm()).detach().requires_grad_(True)
    sharp_grad = torch.autograd.grad(F.cross_entropy(data.train_x @ perturbed.T, data.train_y), perturbed)[0]
    expected = w.detach() - 0.5 * sharp_grad
    fit(model, data, None, train=TRAIN, optim=optim(sam=True, sam_rho=0.2), hardware=HARDWARE, seed=0)
    assert torch.allclose(model.weight.detach(), expected, atol=1e-6)
    plain, _ = tiny_problem()
    fit(plain, data, None, train=TRAIN, optim=optim(), hardware=HARDWARE, seed=0)
    assert torch.allclose(plain.weight.detach(), w.detach() - 0.5 * grad, atol=1e-6)
    assert not torch.allclose(plain.weight, model.weight)


def test_null_keys_leave_training_unchanged():
    a, data = tiny_problem()
    b, _ = tiny_problem()
    train = {**TRAIN, "steps": 5}
    fit(a, data, None, train=train, optim=optim(), hardware=HARDWARE, seed=0)
    fit(b, data, None, train=train, optim=optim(sam=None, sam_rho=None, saf=None, saf_lag=None), hardware=HARDWARE, seed=0)
    assert torch.equal(a.weight, b.weight)


def test_saf_adds_its_term_only_once_past_outputs_exist():
    from overparam.engine.sharpness import Sharpness

    model, data = tiny_problem()
    sharpness = Sharpness.from_config(model, optim(saf=1.0, saf_lag=1), num_examples=8)
    index = torch.arange(8)
    zero = torch.zeros(())
    model(data.train_x)
    assert float(sharpness.add_trajectory_term(zero, index, epoch=0).detach()) == 0.0  # nothing from epoch -1
    with torch.no_grad():  # change one class's row (a shift of every row would not change the softmax)
        model.weight[0].add_(0.5)
    model(data.train_x)
    term = float(sharpness.add_trajectory_term(zero, index, epoch=1).detach())
    assert term > 0.0
    # Same outputs as the stored ones: KL = 0.
    with torch.no_grad():
        model.weight[0].sub_(0.5)
    model(data.train_x)
    assert float(sharpness.add_trajectory_term(zero, index, epoch=1).detach()) == pytest.approx(0.0, abs=1e-6)
    sharpness.close()


def test_saf_training_resumes_exactly(tmp_path):
    """A SAF run killed mid-way (its memory bank in the checkpoint) ends like an uninterrupted one."""
    from overparam.store import Run

    def train(root, steps):
        model, data = tiny_problem()
        run = Run(root, {"x": 1}).start()
        fit(model, data, run, train={"steps": steps, "epochs": None, "batch_size": 4, "eval_every": 2},
            optim=optim(saf=0.5), hardware=HARDWARE, seed=0)
        return model.weight.detach().clone()

    whole = train(tmp_path / "whole", 8)
    train(tmp_path / "cut", 4)
    import shutil

    # Re-open the cut run with the full length: fit resumes from its step-4 checkpoint.
    resumed = train(tmp_path / "cut", 8)
    assert torch.equal(whole, resumed)
    shutil.rmtree(tmp_path / "cut")
