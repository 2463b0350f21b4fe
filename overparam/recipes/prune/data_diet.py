"""`method=data_diet`: prune the training set by early-training example scores (Paul et al. 2021).

EL2N: ||softmax(f(x)) - onehot(y)||_2; GraNd: ||grad_w loss(x, y)||_2 over all parameters. Each is
averaged over `diet.seeds` models trained `diet.epochs` epochs from different initializations.
The `diet.keep` fraction with the highest scores (the hardest examples) is kept, or a random subset
of that size (`diet.score=random`, the baseline), and the model is trained on it from scratch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from overparam.errors import UserError
from overparam.recipes.shared import prunable as common


@torch.no_grad()
def el2n(model, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 2048) -> torch.Tensor:
    """Error L2 norm of every example."""
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        probs = F.softmax(model(x[start:start + batch_size]).float(), dim=1)
        onehot = F.one_hot(y[start:start + batch_size], num_classes).float()
        out.append((probs - onehot).norm(dim=1))
    return torch.cat(out).cpu()


def grand(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Per-example gradient norm over all trainable parameters (torch.func vmap over examples)."""
    from torch.func import functional_call, grad, vmap

    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_of(p, xi, yi):
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(logits, yi.unsqueeze(0))

    per_example = vmap(grad(loss_of), in_dims=(None, 0, 0))
    norms = []
    for start in range(0, len(x), batch_size):
        grads = per_example(params, x[start:start + batch_size], y[start:start + batch_size])
        squared = sum(g.reshape(g.shape[0], -1).pow(2).sum(dim=1) for g in grads.values())
        norms.append(squared.sqrt())
    return torch.cat(norms).cpu()


def example_scores(params, setup, kind: str) -> torch.Tensor:
    """Scores of every training example, averaged over `diet.seeds` briefly trained models (`diet.epochs` each)."""
    from overparam.engine import fit

    data = setup.data
    if kind == "random":
        generator = torch.Generator().manual_seed(common.derived_seed(int(setup.settings.seed), "diet_random"))
        return torch.rand(len(data.train_x), generator=generator)
    train = setup.settings.train.to_dict()
    train.update({"epochs": params["diet.epochs"], "steps": None})
    total = torch.zeros(len(data.train_x))
    for index in range(params["diet.seeds"]):
        seed = common.derived_seed(int(setup.settings.seed), "diet_model", index) % (2 ** 31)
        model = setup.new_model(seed)
        # Short scoring runs are not checkpointed: the finished scores are (checkpoints/diet_scores).
        fit(model, data, None, **setup.fit_kwargs(train=train, seed=seed))
        if kind == "el2n":
            total += el2n(model, data.train_x, data.train_y, data.num_classes)
        else:
            total += grand(model, data.train_x, data.train_y)
    return total / params["diet.seeds"]


def run(params, context) -> dict:
    """Score the training examples, keep `diet.keep` of them, train on the kept subset."""
    from overparam.engine import fit

    settings, run = context.settings, context.run
    setup = context.prepare()
    kind = params["diet.score"]
    scoring = run.phase("diet_scores")
    if scoring.saved:
        scores = scoring.load()["scores"]
    else:
        scores = example_scores(params, setup, kind)
        scoring.save({"scores": scores})
    count = len(scores)
    keep = max(1, int(math.floor(count * params["diet.keep"] + 0.5)))
    if keep > count:
        raise UserError(f"diet.keep={params['diet.keep']} keeps more examples than the {count} there are")
    kept = torch.sort(torch.argsort(scores, descending=True, stable=True)[:keep]).values
    data = setup.data.subset_train(kept.to(setup.data.train_x.device))
    model = setup.new_model()
    result = fit(model, data, run, tag="diet", label=f"data_diet {kind} keep {keep}/{count}", **setup.fit_kwargs())
    run.save_checkpoint("model", model.state_dict())
    from overparam.models import count_parameters

    return {**result.flat(), "steps": result.steps, "examples_kept": keep, "examples_total": count,
            "kept_fraction": keep / count, "kept_mean_score": float(scores[kept].mean()),
            "parameters": count_parameters(model)}
