"""Distillation loss terms and their weighted sum (features are tapped by `overparam.models.taps`).

A distillation objective is a weighted sum of named terms (`kd`, `ce`, `feature`, ...); each term
is logged on its own (`train/loss_<name>` rows of metrics.jsonl). A term whose weight is 0 is not
computed at all, so `kd.alpha=0` trains exactly like plain cross-entropy.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

from overparam.engine.evaluate import cross_entropy
from overparam.errors import UserError


def kd_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. (2015): T^2 * KL(softmax(teacher/T) || softmax(student/T)), mean over the batch
    (over every token of it for a language model's (N, T, V) logits)."""
    t = float(temperature)
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise UserError(f"the student predicts {student_logits.shape[-1]} classes (tokens), the teacher "
                        f"{teacher_logits.shape[-1]}; distill between models of one vocabulary")
    if student_logits.dim() == 3:
        student_logits, teacher_logits = student_logits.flatten(0, 1), teacher_logits.flatten(0, 1)
    student_log_probs = F.log_softmax(student_logits.float() / t, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return kl * t * t


def ce_term(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the labels (the task term; per token for a language model)."""
    return cross_entropy(logits, labels)


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Linear CKA between two batches of features (N, *) (Kornblith et al. 2019); 1 = same geometry."""
    a = a.flatten(1).float()
    b = b.flatten(1).float()
    a = a - a.mean(dim=0, keepdim=True)
    b = b - b.mean(dim=0, keepdim=True)
    cross = (b.T @ a).pow(2).sum()
    return cross / ((a.T @ a).norm() * (b.T @ b).norm() + 1e-12)


def cka_term(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """1 - linear CKA: a distance between representations that needs no learned map."""
    return 1.0 - linear_cka(student_features, teacher_features)


def mapped_mse_term(student_features: torch.Tensor, teacher_features: torch.Tensor, mapping: nn.Module) -> torch.Tensor:
    """Mean squared error between a learned linear map of the student's features and the teacher's (FitNets)."""
    return F.mse_loss(mapping(student_features.flatten(1).float()), teacher_features.flatten(1).float())


class WeightedTerms:
    """A weighted sum of named loss terms whose running means are logged one row per term."""

    def __init__(self, weights: dict[str, float]):
        self.weights = {name: float(weight) for name, weight in weights.items()}
        self._sums: dict[str, float] = defaultdict(float)
        self._count = 0

    def active(self, name: str) -> bool:
        """Whether a term has a non-zero weight (only active terms are computed)."""
        return self.weights.get(name, 0.0) != 0.0

    def combine(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """sum(weight * value) over the active terms; remembers each value for the log."""
        total = None
        for name, value in values.items():
            weight = self.weights.get(name, 0.0)
            if weight == 0.0:
                continue
            self._sums[name] += float(value.detach())
            total = weight * value if total is None else total + weight * value
        self._count += 1
        if total is None:
            raise ValueError("every loss term has weight 0")
        return total

    def flush(self, run, step: int, level=None) -> dict[str, float]:
        """Log the mean of each term since the last flush as `train` rows `loss_<name>`; reset."""
        if not self._count:
            return {}
        means = {f"loss_{name}": total / self._count for name, total in self._sums.items()}
        if run is not None and means:
            run.log(step, "train", means, level=level)
        self._sums.clear()
        self._count = 0
        return means

    def on_eval(self, run, level=None):
        """A `fit` on_eval that logs the term means at each of fit's evaluations (rows line up with fit's)."""
        def flush_at(step, results):
            self.flush(run, step, level)
        return flush_at


class TeacherLogits:
    """Teacher logits of a batch, computed without grad; for the whole train set once when it is fixed.

    Without augmentation a batch is the rows `index` of `train_x` (fit passes them to its loss_fn),
    so the teacher runs once per dataset and each batch looks its logits up; an augmented batch is
    new every step and runs through the teacher.
    """

    def __init__(self, teacher: nn.Module, data):
        self.teacher = teacher
        self.cache: torch.Tensor | None = None
        # A language model's logits are (N, T, V): cached only while they stay under 1 GiB of float32.
        small = not getattr(data, "bytes_per_token", None) or data.train_y.numel() * data.num_classes <= 2 ** 28
        if data.augment is None and small:
            self.cache = self._run(data.train_x)

    @torch.no_grad()
    def _run(self, x: torch.Tensor) -> torch.Tensor:
        self.teacher.eval()
        return torch.cat([self.teacher(x[i:i + 2048]) for i in range(0, len(x), 2048)]).float()

    def __call__(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Logits of the batch `x`, whose rows of the train set are `index`."""
        if self.cache is not None:
            return self.cache[index]
        return self._run(x)
