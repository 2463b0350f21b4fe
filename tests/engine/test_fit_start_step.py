"""`fit(start_step=N)` is a resume at N without a file; `loss_fn` gets the batch's rows; `on_eval` follows evaluations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from tiny_runs import tiny

# 20 steps of 512 examples (MNIST-1D's train split is 8 batches an epoch, so the phase spans three epochs),
# evaluated every 5 steps, resume boundaries also every 4; Adam, so the optimizer has state to carry.
OVERRIDES = [*tiny(20, eval_every=5, batch_size=512), "train.checkpoint_every=4", "optim.name=adam", "optim.lr=0.01"]
START = 7


@pytest.fixture(scope="module")
def setup():
    from overparam.cli.train import compose_checked
    from overparam.recipes.common import prepare

    container = compose_checked(OVERRIDES)
    prepared = prepare(OmegaConf.create(container))
    prepared.container = container
    return prepared


def _run(setup, path):
    from overparam.store import Run

    return Run(path, setup.container).start()


def _same_weights(a, b) -> bool:
    return all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


class _Crash(Exception):
    pass


def test_start_step_trains_the_rest_of_the_schedule_exactly_as_a_resume_at_that_step(setup, tmp_path):
    from overparam.engine import fit
    from overparam.engine.optim import build_optimizer

    kwargs = setup.fit_kwargs()
    # (a) A run holding a resume point at START: the starting weights and a fresh optimizer.
    resumed_run = _run(setup, tmp_path / "resumed")
    resumed = setup.new_model()
    fresh = build_optimizer([p for p in resumed.parameters() if p.requires_grad], kwargs["optim"])
    resumed_run.save_resume_point("resume_train", {
        "model": resumed.state_dict(), "optimizer": fresh.state_dict(), "scaler": None, "step": START,
        "best_step": START, "best_loss": math.inf, "best": {}, "history": [], "seconds": 0.0})
    by_resume = fit(resumed, setup.data, resumed_run, **kwargs)

    # (b) The same starting weights through start_step, in a run that has no file yet.
    started_run = _run(setup, tmp_path / "started")
    started = setup.new_model()
    written = []  # after each step, before that step's resume point: was one written?
    by_start = fit(started, setup.data, started_run, start_step=START, **kwargs,
                   step_hook=lambda step, model, optimizer: written.append(started_run.has_resume_point("resume_train")))
    assert written[0] is False  # nothing was written to start at START

    assert _same_weights(started, resumed)
    assert started_run.read_metrics() == resumed_run.read_metrics()
    assert by_start.history == by_resume.history and by_start.final == by_resume.final
    assert by_start.best_step == by_resume.best_step and by_start.steps == 20
    assert min(row["step"] for row in started_run.read_metrics()) == 10  # the first evaluation after START

    # Starting at 0 is another training: the schedule really moved.
    from_zero = setup.new_model()
    fit(from_zero, setup.data, None, **kwargs)
    assert not _same_weights(from_zero, started)


def test_a_real_resume_point_takes_precedence_over_start_step(setup, tmp_path):
    from overparam.engine import fit

    kwargs = setup.fit_kwargs()
    reference_run = _run(setup, tmp_path / "reference")
    reference = setup.new_model()
    fit(reference, setup.data, reference_run, start_step=START, **kwargs)

    def crash(step, model, optimizer):
        if step == 13:
            raise _Crash("killed at step 13")

    run = _run(setup, tmp_path / "killed")
    with pytest.raises(_Crash):
        fit(setup.new_model(), setup.data, run, start_step=START, step_hook=crash, **kwargs)
    assert run.load_resume_point("resume_train")["step"] == 12
    # A fresh model (so starting at START would give other weights): the resume point at 12 is used.
    again = setup.new_model()
    torch.nn.init.zeros_(again.get_submodule("fc_out").weight)
    result = fit(again, setup.data, run, start_step=START, **kwargs)
    assert result.steps == 20
    assert _same_weights(again, reference)
    assert run.read_metrics() == reference_run.read_metrics()


def test_start_step_outside_the_schedule_is_a_user_error(setup):
    from overparam.engine import fit
    from overparam.errors import UserError

    with pytest.raises(UserError, match="start step 20"):
        fit(setup.new_model(), setup.data, None, start_step=20, **setup.fit_kwargs())


def test_loss_fn_gets_the_rows_of_its_batch_and_on_eval_every_evaluation(setup):
    from overparam.engine import fit
    from overparam.engine.fit import epoch_order

    data = setup.data
    seen: list[tuple[int, torch.Tensor]] = []

    def loss_fn(model, x, y, step, index):
        assert torch.equal(data.train_x[index], x) and torch.equal(data.train_y[index], y)
        seen.append((step, index.clone()))
        return F.cross_entropy(model(x), y)

    evaluations = []
    result = fit(setup.new_model(), data, None, loss_fn=loss_fn, start_step=3,
                 on_eval=lambda step, results: evaluations.append((step, results)), **setup.fit_kwargs())
    assert [step for step, _ in seen] == list(range(3, 20))
    # Steps 8..15 are the second epoch: its batches are that epoch's permutation, every example once.
    second = torch.cat([index for step, index in seen if 8 <= step < 16]).cpu()
    assert torch.equal(second, epoch_order(len(data.train_x), setup.fit_kwargs()["seed"], 1))
    assert [step for step, _ in evaluations] == [5, 10, 15, 20]
    flat = [{"step": step, **{f"{s}_{k}": v for s, m in results.items() for k, v in m.items()}}
            for step, results in evaluations]
    assert flat == result.history
