"""The DINO-style pieces of method=random_teacher: head, loss, views, locality, sharpening and centering."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from overparam.cli.train import train_in_process
from overparam.recipes.distill import random_teacher as rt

from tiny_runs import tiny

TINY = tiny(6)


def test_projection_head_outputs_cosines_to_unit_rows():
    torch.manual_seed(0)
    head = rt.ProjectionHead(8, [16, 16], 4, 32)
    out = head(torch.randn(5, 8))
    assert out.shape == (5, 32)
    assert out.abs().max() <= 1.0 + 1e-6
    # Scaling the last layer changes nothing: its rows are normalized (DINO's weight-normalized layer, norm 1).
    with torch.no_grad():
        head.last.mul_(7.0)
    torch.testing.assert_close(head(torch.randn(5, 8, generator=torch.Generator().manual_seed(1))),
                               head(torch.randn(5, 8, generator=torch.Generator().manual_seed(1))))


def test_dino_loss_is_the_cross_entropy_by_hand():
    student = torch.tensor([[1.0, 0.0, -1.0]])
    teacher = torch.tensor([[0.5, 0.25, 0.25]])
    log_q = [1.0 - math.log(math.e + 1 + math.exp(-1)), -math.log(math.e + 1 + math.exp(-1)),
             -1.0 - math.log(math.e + 1 + math.exp(-1))]
    expected = -(0.5 * log_q[0] + 0.25 * log_q[1] + 0.25 * log_q[2])
    assert float(rt.dino_loss(student, teacher)) == pytest.approx(expected, abs=1e-6)


def test_augment_shifts_by_at_most_shift_and_zero_is_identity():
    x = torch.arange(10.0).repeat(64, 1)
    assert torch.equal(rt.augment(x, 0, 0.0), x)
    torch.manual_seed(0)
    y = rt.augment(x, 2, 0.0)
    offsets = (x[:, 5] - y[:, 5])  # an interior position: the value moved by the shift
    assert set(offsets.tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}


def _options(**changes):
    base = dict(hidden=[16], bottleneck=4, out_dim=32, student_init_noise=None)
    base.update(changes)
    return SimpleNamespace(**base, get=lambda key, default=None: base.get(key, default))


def test_locality_starts_the_student_at_the_teacher(tmp_path):
    from omegaconf import OmegaConf

    from overparam.cli.train import compose_checked
    from overparam.recipes.common import prepare

    cfg = OmegaConf.create(compose_checked([*TINY, "method=random_teacher"]))
    setup = prepare(cfg)
    teacher, student = rt.build_pair(setup, _options(student_init_noise=0.0), seed=0)
    for (name, t), (_, s) in zip(teacher.named_parameters(), student.named_parameters()):
        assert torch.equal(t, s), name
    assert not any(p.requires_grad for p in teacher.parameters())
    _, independent = rt.build_pair(setup, _options(), seed=0)
    assert not torch.equal(independent.projection.last, teacher.projection.last)


def test_sharpened_centered_two_view_run_trains_and_probes(tmp_path):
    summary = train_in_process([*TINY, "method=random_teacher", "random_teacher.probe_epochs=0.5",
                                "random_teacher.teacher_temperature=0.04", "random_teacher.student_temperature=0.1",
                                "random_teacher.center_momentum=0.9", "random_teacher.views=2",
                                "random_teacher.shift=3", "random_teacher.noise=0.05",
                                "random_teacher.hidden=[32]", "random_teacher.out_dim=64"], tmp_path / "dino")
    assert 0.0 < summary["teacher_probe_test_accuracy"] <= 1.0
    assert summary["steps"] == 6
    losses = [row for row in map(__import__("json").loads, (tmp_path / "dino" / "metrics.jsonl").read_text().splitlines())
              if row.get("metric") == "loss" and row.get("split") == "train"]
    assert losses and all(math.isfinite(row["value"]) for row in losses)
    assert 0.0 < losses[-1]["value"]


@pytest.mark.parametrize("override, words", [
    ("random_teacher.views=3", "random_teacher.views"),
    ("random_teacher.teacher_temperature=0", "random_teacher.teacher_temperature"),
    ("random_teacher.hidden=[0]", "random_teacher.hidden"),
    ("random_teacher.center_momentum=1.0", "random_teacher.center_momentum"),
])
def test_bad_values_are_refused(override, words):
    from overparam.cli.train import compose_checked
    from overparam.errors import UserError

    with pytest.raises(UserError, match=words.replace(".", r"\.")):
        compose_checked(["method=random_teacher", override])
