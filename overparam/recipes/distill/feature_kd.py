"""`method=feature_kd`: guide a student's intermediate representations by a frozen guide network's.

Features of chosen layers (module paths, taken with forward hooks) are matched either through a
learned linear map from the student's features to the guide's (FitNets-style MSE) or by linear
CKA, which needs no map. The guide may be trained on the task, a finished run, or left at its
random initialization (`teacher.untrained=true`: guidance without any task loss on the guide,
as in "Training the Untrainable"); `feature_kd.task_weight=0` drops the student's task loss too.
"""

from __future__ import annotations

import torch
from torch import nn

from overparam.engine import fit
from overparam.errors import UserError
from overparam.models.taps import FeatureTap, embedding_point
from overparam.recipes.common import model_summary
from overparam.recipes.distill.kd import new_student, teacher_figures
from overparam.recipes.distill.losses import WeightedTerms, ce_term, cka_term, mapped_mse_term
from overparam.recipes.shared.source import frozen, obtain_model

EMBEDDING = "embedding"  # the input of the classifier layer, for any model of the zoo


class Guided(nn.Module):
    """The student plus the linear maps of its guidance (trained together; only the student is saved)."""

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student
        self.maps = nn.ModuleList()

    def forward(self, x):
        return self.student(x)


def tap_point(model: nn.Module, path: str) -> tuple[str, str]:
    """Where a `feature_kd.layers` path is tapped: `embedding` at the classifier's input, a module at its output."""
    return embedding_point(model) if path == EMBEDDING else (path, "output")


def run(params, context) -> dict:
    """Train the student on task_weight * CE + weight * sum of per-layer feature distances to the guide."""
    settings, run = context.settings, context.run
    setup = context.prepare()
    options = params["feature_kd"]
    guide, figures = obtain_model(params["teacher"].tree(), setup, run, "teacher", seed_offset=1,
                                  models=context.models)
    frozen(guide)
    student = new_student(params["student.from"], setup)
    pairs = [tuple(pair.split(":")) for pair in (options.get("layers") or [f"{EMBEDDING}:{EMBEDDING}"])]
    pairs = [(tap_point(student, s), tap_point(guide, g)) for s, g in pairs]
    guided = Guided(student).to(setup.device)
    student_taps = FeatureTap(student, [s for s, _ in pairs], "feature_kd.layers: the student")
    guide_taps = FeatureTap(guide, [g for _, g in pairs], "feature_kd.layers: the guide")
    distance = str(options.distance)
    if distance == "linear":
        with torch.no_grad():
            sample = setup.data.train_x[:2]
            student(sample)
            guide(sample)
        for student_path, guide_path in pairs:
            size_in = student_taps[student_path].flatten(1).shape[1]
            size_out = guide_taps[guide_path].flatten(1).shape[1]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(context.seed + 31)
                guided.maps.append(nn.Linear(size_in, size_out).to(setup.device))
    terms = WeightedTerms({"feature": float(options.weight), "ce": float(options.task_weight)})

    def loss_fn(model, x, y, step, _index):
        with torch.no_grad():
            guide(x)
        logits = model(x)
        values = {}
        if terms.active("feature"):
            parts = []
            for index, (student_path, guide_path) in enumerate(pairs):
                s, g = student_taps[student_path], guide_taps[guide_path]
                parts.append(mapped_mse_term(s, g, model.maps[index]) if distance == "linear" else cka_term(s, g))
            values["feature"] = torch.stack(parts).sum()
        if terms.active("ce"):
            values["ce"] = ce_term(logits, y)
        return terms.combine(values)

    kwargs = setup.fit_kwargs()
    result = fit(guided, setup.data, run, tag="feature_kd", label="feature_kd", loss_fn=loss_fn,
                 on_eval=terms.on_eval(run), **kwargs)
    student_taps.remove()
    guide_taps.remove()
    run.save_checkpoint("model", student.state_dict())
    return {**result.flat(), **model_summary(student), "steps": result.steps, **teacher_figures(guide, figures)}
