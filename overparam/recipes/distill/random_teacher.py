"""`method=random_teacher`: "Random Teachers are Good Teachers" (Sarnthein et al. 2023).

A teacher at random initialization, never updated, is distilled into a student of the same
architecture on the inputs alone (no labels), DINO-style: both carry a projection head on their
embedding (the input of the classifier layer), an MLP (GELU) -> an L2-normalized bottleneck -> a
weight-normalized linear layer (unit-norm rows) to a high-dimensional softmax output; the student
minimizes the cross-entropy H(softmax((t - c) / tau_t), softmax(s / tau_s)). Both bodies are then
linear-probed on the labels (body frozen, a fresh head trained); the paper's finding is that the
student's probe is above the teacher's.

The defaults follow the authors' code for the random-teacher experiments (safelix/dinopl,
configs/cifar10_distillation_v2.json): teacher and student temperature 1, no centering, one view
(no multi-crop), teacher frozen ("no_update"), AdamW lr 1e-3 without weight decay, output 65536
behind a 2048-2048 MLP and a 256-d bottleneck. DINO's sharpening (tau_t=0.04 < tau_s=0.1), its
centering (momentum 0.9) and two augmented views with opposite pairing are knobs here
(`teacher_temperature`, `student_temperature`, `center_momentum`, `views`, `shift`, `noise`);
the head is narrower by default (512-512, 64, 4096 outputs) to fit 2 CPU cores.
Locality: `student_init_noise` starts the student at the teacher (body and head) plus noise of
that size relative to each tensor's std; null = an independent initialization.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from overparam.engine import fit
from overparam.errors import UserError
from overparam.models.taps import FeatureTap, embedding_point
from overparam.recipes.common import model_summary
from overparam.recipes.distill.losses import WeightedTerms
from overparam.recipes.shared.source import cached_phase, frozen, output_head, replace_head


class ProjectionHead(nn.Module):
    """DINO's head: MLP (GELU) -> L2-normalized bottleneck -> weight-normalized linear (rows of norm 1)."""

    def __init__(self, embed_dim: int, hidden: list[int], bottleneck: int, out_dim: int):
        super().__init__()
        dims = [embed_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.GELU()]
        layers.append(nn.Linear(dims[-1], bottleneck))
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last = nn.Parameter(torch.empty(out_dim, bottleneck))
        nn.init.uniform_(self.last, -1 / math.sqrt(bottleneck), 1 / math.sqrt(bottleneck))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(embedding), dim=-1) @ F.normalize(self.last, dim=-1).T


class WithProjection(nn.Module):
    """A body and its projection head as one module, so resume points hold both; forward = the body's."""

    def __init__(self, body: nn.Module, head: ProjectionHead):
        super().__init__()
        self.body = body
        self.projection = head
        self.embedding = embedding_point(body)
        self.tap = FeatureTap(body, [self.embedding])

    def forward(self, x):
        return self.body(x)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Projection-head outputs of a batch (before temperature and centering)."""
        self.body(x)
        return self.projection(self.tap[self.embedding].flatten(1))

    def close(self) -> None:
        self.tap.remove()


def augment(x: torch.Tensor, shift: int, noise: float) -> torch.Tensor:
    """A random view of a batch of 1-D signals (or any tensor along its last axis): a translation by up to
    `shift` positions (edge values repeated) and Gaussian noise of std `noise` (both 0: `x` itself)."""
    if shift:
        length = x.shape[-1]
        offsets = torch.randint(-shift, shift + 1, (x.shape[0],) + (1,) * (x.dim() - 1), device=x.device)
        index = (torch.arange(length, device=x.device) - offsets).clamp(0, length - 1).expand_as(x)
        x = torch.gather(x, -1, index)
    if noise > 0:
        x = x + noise * torch.randn_like(x)
    return x


def dino_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student's softmax against the teacher's, mean over the batch."""
    return -(teacher_probs * F.log_softmax(student_logits.float(), dim=-1)).sum(dim=-1).mean()


def linear_probe(body, setup, seed: int, probe_epochs: float) -> dict:
    """Accuracy of a linear classifier trained on the frozen features of `body` (a copy is probed)."""
    probe = frozen(copy.deepcopy(body))
    head = replace_head(probe, setup.data.num_classes, seed)
    kwargs = setup.fit_kwargs(train={**setup.settings.train.to_dict(), "epochs": probe_epochs, "steps": None})
    result = fit(probe, setup.data, None, tag="probe", label="probe", trainable=list(head.parameters()), **kwargs)
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


def _embed_dim(body, setup) -> int:
    layer = output_head(body)
    return int(layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels)


def build_pair(setup, options, seed: int) -> tuple[WithProjection, WithProjection]:
    """(teacher, student): bodies of the run's model with projection heads; locality as configured."""
    def head(at_seed: int, body) -> ProjectionHead:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(at_seed)
            return ProjectionHead(_embed_dim(body, setup), list(options.hidden), int(options.bottleneck),
                                  int(options.out_dim)).to(setup.device)

    teacher_body = setup.new_model(seed + 1)
    teacher = WithProjection(teacher_body, head(seed + 1, teacher_body))
    frozen(teacher)
    if options.get("student_init_noise") is not None:
        start = perturbed_copy(nn.ModuleDict({"body": teacher.body, "projection": teacher.projection}),
                               float(options.student_init_noise), seed)
        student = WithProjection(start["body"], start["projection"])
    else:
        body = setup.new_model(seed)
        student = WithProjection(body, head(seed, body))
    return teacher, student.train()


def run(params, context) -> dict:
    """Distill a random teacher into a student on unlabeled inputs (DINO-style); probe both on the labels."""
    settings, run = context.settings, context.run
    setup = context.prepare()
    options = params["random_teacher"]
    seed = context.seed
    teacher, student = build_pair(setup, options, seed)
    teacher_temperature = float(options.teacher_temperature)
    student_temperature = float(options.student_temperature)
    momentum = options.get("center_momentum")
    views, shift, noise = int(options.views), int(options.shift), float(options.noise)
    center = torch.zeros(int(options.out_dim), device=setup.device)
    terms = WeightedTerms({"distill": 1.0})

    def loss_fn(model, x, y, step, index):  # the labels y are never used
        nonlocal center
        crops = [augment(x, shift, noise) for _ in range(views)]
        with torch.no_grad():
            targets = [teacher.project(crop) for crop in crops]
            probs = [F.softmax((t - center) / teacher_temperature, dim=-1) for t in targets]
            if momentum is not None:  # updated after use, as DINO's head does
                center = center * float(momentum) + torch.cat(targets).mean(dim=0) * (1 - float(momentum))
        predictions = [model.project(crop) / student_temperature for crop in crops]
        # One view: the same view for both; two views: opposite pairing (DINO's default).
        pairs = [(0, 0)] if views == 1 else [(0, 1), (1, 0)]
        loss = sum(dino_loss(predictions[s], probs[t]) for t, s in pairs) / len(pairs)
        return terms.combine({"distill": loss})

    kwargs = setup.fit_kwargs()
    # fit's val/test rows during this phase score the body's untrained classifier; the probes below are the result.
    result = fit(student, setup.data, run, tag="distill", label="distill", loss_fn=loss_fn, on_eval=terms.on_eval(run),
                 **kwargs)
    teacher.close()
    student.close()
    run.save_checkpoint("model", student.body.state_dict())
    probe_epochs = float(options.probe_epochs)
    probes = {}
    for role, body in (("teacher", teacher.body), ("student", student.body)):
        holder = copy.deepcopy(body)
        probes[role] = cached_phase(run, f"probe_{role}", holder,
                                    lambda body=body: linear_probe(body, setup, seed, probe_epochs))
    summary = {f"{role}_probe_{k}": v for role, figures in probes.items() for k, v in figures.items()}
    # The run's headline numbers are the student's probe (what `objective` and tables read).
    summary.update({k: v for k, v in probes["student"].items()})
    summary["probe_gain"] = probes["student"]["test_accuracy"] - probes["teacher"]["test_accuracy"]
    summary.update({**model_summary(student.body), "steps": result.steps, "train_seconds": round(result.seconds, 3)})
    return summary
