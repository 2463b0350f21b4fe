"""`method=random_teacher`: "Random Teachers are Good Teachers" (Sarnthein et al. 2023).

A teacher at random initialization is distilled into a student of the same architecture on the
inputs alone (no labels): the student matches the teacher's softened embedding (the input of the
classifier layer). Both are then linear-probed on the labels (body frozen, a fresh head trained);
the paper's finding is that the student's probe accuracy is clearly above the teacher's.
"""

from __future__ import annotations

import copy

import torch

from overparam.checks import number
from overparam.engine import fit
from overparam.engine.optim import total_steps
from overparam.recipes.common import model_summary, prepare
from overparam.recipes.distill.losses import WeightedTerms, kd_term
from overparam.recipes.tune.source import cached_phase, frozen, output_head, replace_head, steps_between_logs


def validate(cfg: dict) -> None:
    """Temperatures > 0, noise >= 0, probe_epochs > 0."""
    number(cfg, "random_teacher.temperature", low=0.0, low_open=True)
    number(cfg, "random_teacher.noise", low=0.0)
    number(cfg, "random_teacher.student_init_noise", low=0.0, optional=True)
    number(cfg, "random_teacher.probe_epochs", low=0.0, low_open=True)


class HeadInput:
    """The embedding a model feeds its classifier layer, taken with a forward pre-hook."""

    def __init__(self, model):
        self.value = None
        self.handle = output_head(model).register_forward_pre_hook(self._save)

    def _save(self, module, inputs):
        self.value = inputs[0]

    def close(self) -> None:
        self.handle.remove()


def linear_probe(body, setup, seed: int, probe_epochs: float) -> dict:
    """Accuracy of a linear classifier trained on the frozen features of `body` (a copy is probed)."""
    probe = frozen(copy.deepcopy(body))
    head = replace_head(probe, setup.data.num_classes, seed)
    kwargs = setup.fit_kwargs(train={**dict(setup.cfg.train), "epochs": probe_epochs, "steps": None})
    result = fit(probe, setup.data, None, tag="probe", label="probe", params=list(head.parameters()), **kwargs)
    return {f"{split}_accuracy": m["accuracy"] for split, m in result.final.items()}


def perturbed_copy(model, relative_noise: float, seed: int):
    """`model` plus Gaussian noise of `relative_noise` times each tensor's standard deviation."""
    copy_ = copy.deepcopy(model)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for parameter in copy_.parameters():
            noise = torch.randn(parameter.shape, generator=generator).to(parameter.device, parameter.dtype)
            scale = parameter.detach().float().std() if parameter.numel() > 1 else parameter.detach().abs().mean()
            parameter.add_(noise * relative_noise * scale)
            parameter.requires_grad_(True)
    return copy_.train()


def run(cfg, run) -> dict:
    """Distill a random teacher into a student on unlabeled inputs; probe both on the labels."""
    setup = prepare(cfg)
    options = cfg.random_teacher
    seed = int(cfg.seed)
    teacher = frozen(setup.new_model(seed + 1))
    if options.get("student_init_noise") is not None:
        student = perturbed_copy(teacher, float(options.student_init_noise), seed)
    else:
        student = setup.new_model(seed)
    temperature = float(options.temperature)
    noise = float(options.noise)
    terms = WeightedTerms({"distill": 1.0})
    teacher_embedding, student_embedding = HeadInput(teacher), HeadInput(student)

    def loss_fn(model, x, y, step):  # the labels y are never used
        with torch.no_grad():
            teacher(x)
        view = x + noise * torch.randn_like(x) if noise > 0 else x
        model(view)
        return terms.combine({"distill": kd_term(student_embedding.value, teacher_embedding.value, temperature)})

    kwargs = setup.fit_kwargs()
    total, _ = total_steps(kwargs["train"], len(setup.data.train_x))
    hook = terms.hook(run, steps_between_logs(kwargs["train"], len(setup.data.train_x)), total)
    # fit's val/test rows during this phase score the untrained head; the probes below are the result.
    result = fit(student, setup.data, run, tag="distill", label="distill", loss_fn=loss_fn, step_hook=hook, **kwargs)
    teacher_embedding.close()
    student_embedding.close()
    run.save_checkpoint("model", student.state_dict())
    probe_epochs = float(options.probe_epochs)
    probes = {}
    for role, body in (("teacher", teacher), ("student", student)):
        holder = copy.deepcopy(body)
        probes[role] = cached_phase(run, f"probe_{role}", holder,
                                    lambda body=body: linear_probe(body, setup, seed, probe_epochs))
    summary = {f"{role}_probe_{k}": v for role, figures in probes.items() for k, v in figures.items()}
    # The run's headline numbers are the student's probe (what `objective` and tables read).
    summary.update({k: v for k, v in probes["student"].items()})
    summary["probe_gain"] = probes["student"]["test_accuracy"] - probes["teacher"]["test_accuracy"]
    summary.update({**model_summary(student), "steps": result.steps, "train_seconds": round(result.seconds, 3)})
    return summary
