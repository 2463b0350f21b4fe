"""Golden values of the distillation loss terms and the weighted sum's bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch

from overparam.recipes.distill.losses import WeightedTerms, ce_term, cka_term, kd_term, linear_cka


def softmax(values, temperature):
    exps = [math.exp(v / temperature) for v in values]
    return [e / sum(exps) for e in exps]


def test_kd_term_equals_hand_computed_value():
    student, teacher, temperature = [1.0, 2.0, 3.0], [3.0, 2.0, 0.5], 2.0
    p, q = softmax(teacher, temperature), softmax(student, temperature)
    expected = temperature ** 2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    value = kd_term(torch.tensor([student]), torch.tensor([teacher]), temperature)
    assert float(value) == pytest.approx(expected, rel=1e-6)
    assert float(value) == pytest.approx(1.524627, rel=1e-5)  # pinned


def test_kd_term_is_zero_for_identical_logits_and_averages_over_the_batch():
    logits = torch.tensor([[0.3, -1.0, 2.0], [1.0, 1.0, 1.0]])
    assert float(kd_term(logits, logits, 3.0)) == pytest.approx(0.0, abs=1e-7)
    a, b = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 0.5]])
    both = kd_term(torch.cat([a, a]), torch.cat([b, b]), 2.0)
    assert float(both) == pytest.approx(float(kd_term(a, b, 2.0)), rel=1e-6)


def test_weighted_terms_skip_zero_weights_and_log_each_term():
    terms = WeightedTerms({"kd": 0.0, "ce": 1.0})
    assert not terms.active("kd") and terms.active("ce")
    logits, labels = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    total = terms.combine({"ce": ce_term(logits, labels), "kd": torch.tensor(5.0)})
    assert torch.equal(total, ce_term(logits, labels))  # alpha = 0: exactly the cross-entropy

    class Recorder:
        rows = []

        def log(self, step, split, metrics, level=None):
            self.rows.append((step, split, metrics))

    weighted = WeightedTerms({"kd": 0.25, "ce": 0.75})
    weighted.combine({"kd": torch.tensor(2.0), "ce": torch.tensor(4.0)})
    value = weighted.combine({"kd": torch.tensor(4.0), "ce": torch.tensor(0.0)})
    assert float(value) == pytest.approx(1.0)
    recorder = Recorder()
    assert weighted.flush(recorder, 7) == {"loss_kd": 3.0, "loss_ce": 2.0}
    assert recorder.rows == [(7, "train", {"loss_kd": 3.0, "loss_ce": 2.0})]


def test_linear_cka_is_one_under_rotation_and_scaling():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(64, 8, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=generator))
    assert float(linear_cka(features, 3.0 * features @ rotation)) == pytest.approx(1.0, abs=1e-5)
    assert float(cka_term(features, torch.randn(64, 8, generator=generator))) > 0.3


def test_teacher_logits_are_looked_up_by_the_rows_of_the_batch():
    from types import SimpleNamespace

    from overparam.recipes.distill.losses import TeacherLogits

    torch.manual_seed(0)
    teacher = torch.nn.Linear(5, 3)
    calls = []
    teacher.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    data = SimpleNamespace(train_x=torch.randn(300, 5), augment=None)
    logits = TeacherLogits(teacher, data)
    for index in (torch.tensor([3, 250, 7]), torch.tensor([299, 0])):
        x = data.train_x[index]
        assert torch.allclose(logits(x, index), teacher(x), atol=1e-6, rtol=0)
    assert calls[0] == 300 and len(calls) == 3  # the teacher ran over the train set once; the rest are checks
    # Augmented data: a batch is new each step, so its logits come from the teacher, whatever its rows were.
    augmented = TeacherLogits(teacher, SimpleNamespace(train_x=data.train_x, augment=lambda x, _: x))
    noisy = data.train_x[:4] + 1.0
    assert torch.allclose(augmented(noisy, torch.arange(4)), teacher(noisy), atol=1e-6, rtol=0)
