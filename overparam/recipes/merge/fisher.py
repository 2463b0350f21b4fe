"""`method=fisher`: Fisher-weighted averaging (Matena & Raffel 2022).

Each ingredient's diagonal Fisher F_i is estimated on `fisher.samples` training examples, either
exactly over the model's own label distribution (`fisher.kind=exact`: sum_y p(y|x) g_y^2) or
empirically with the true labels (`empirical`). merged = sum_i w_i F_i theta_i / sum_i w_i F_i,
with F_i floored at `fisher.floor` so parameters no ingredient cares about stay finite.
Streaming: the two sums and one ingredient are held at a time.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch
import torch.nn.functional as F

from overparam.errors import UserError
from overparam.recipes.shared import merging as common
from overparam.recipes.shared.states import finish_state, is_averaged, load_weights
from overparam.recipes.shared.summary import ingredient_rows, soup_summary

PARAMS = "fisher"


def diagonal_fisher(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, kind: str = "exact",
                    batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Mean over examples of the squared per-example gradient of log p(y|x), per parameter."""
    from torch.func import functional_call, grad, vmap

    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def log_prob(p, xi, yi):
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        # gather, not [0, yi]: indexing by a tensor value is data-dependent control flow under vmap.
        return F.log_softmax(logits, dim=-1)[0].gather(0, yi.reshape(1)).squeeze(0)

    vmapped = vmap(grad(log_prob), in_dims=(None, 0, 0))

    def one_at_a_time(p, xb, yb):
        out: dict = {k: [] for k in p}
        for xi, yi in zip(xb, yb):
            leaves = {k: v.clone().requires_grad_() for k, v in p.items()}
            with torch.enable_grad():
                grads = torch.autograd.grad(log_prob(leaves, xi, yi), list(leaves.values()), allow_unused=True)
            for (k, leaf), g in zip(leaves.items(), grads):
                out[k].append(torch.zeros_like(leaf) if g is None else g)
        return {k: torch.stack(v) for k, v in out.items()}

    def per_example(p, xb, yb):
        try:
            return vmapped(p, xb, yb)
        except Exception:  # noqa: BLE001 - a layer without a vmap rule (a custom kernel): loop instead
            return one_at_a_time(p, xb, yb)

    fisher = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in params.items()}
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            if kind == "empirical":
                grads = per_example(params, xb, y[start:start + batch_size])
                for k, g in grads.items():
                    fisher[k] += g.double().pow(2).sum(0)
                continue
            probs = F.softmax(model(xb), dim=-1).double()
            for label in range(probs.shape[1]):
                labels = torch.full((len(xb),), label, dtype=torch.long, device=xb.device)
                grads = per_example(params, xb, labels)
                weight = probs[:, label]
                for k, g in grads.items():
                    fisher[k] += torch.einsum("n,n...->...", weight, g.double().pow(2))
    return {k: v / max(len(x), 1) for k, v in fisher.items()}


def merge_states(states: Iterable[tuple[dict, dict]], weights: Iterable[float] | None = None,
                 floor: float = 1e-6) -> dict:
    """sum_i w_i F_i theta_i / sum_i w_i F_i over (state, fisher) pairs, streamed.

    Tensors without a Fisher (BatchNorm statistics) get the plain weighted mean; masks and integer
    buffers come from the first state.
    """
    numerator: dict = {}
    denominator: dict = {}
    plain: dict = {}
    carried: dict = {}
    weight_sum = 0.0
    weight_iter: Iterator[float] | None = iter(weights) if weights is not None else None
    for state, fisher in states:
        w = float(next(weight_iter)) if weight_iter is not None else 1.0
        weight_sum += w
        for key, value in state.items():
            if not is_averaged(key, value):
                carried.setdefault(key, value.clone())
            elif key in fisher:
                f = w * fisher[key].double().clamp(min=floor)
                numerator[key] = f * value.double() if key not in numerator else numerator[key] + f * value.double()
                denominator[key] = f if key not in denominator else denominator[key] + f
            else:
                plain[key] = w * value.double() if key not in plain else plain[key] + w * value.double()
    merged = {key: numerator[key] / denominator[key] for key in numerator}
    merged.update({key: value / weight_sum for key, value in plain.items()})
    merged.update(carried)
    return finish_state(merged)


def _weights(params, count: int) -> list[float] | None:
    weights = params["fisher.weights"]
    if weights is None:
        return None
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise UserError(f"{PARAMS}.weights has {len(weights)} values for {count} ingredients")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise UserError(f"{PARAMS}.weights must be non-negative with a positive sum")
    return weights


def check(params, cfg: dict) -> None:
    """Ingredients exist and match; one weight per ingredient."""
    check = common.validate_refs(params)
    _weights(params, len(check.refs))


def run(params, context) -> dict:
    """Estimate each ingredient's Fisher, merge, evaluate, save."""
    settings, run = context.settings, context.run
    setup = common.open_merge(params, settings)
    weights = _weights(params, len(setup.refs))
    rows = ingredient_rows(setup)
    samples = min(params["fisher.samples"], len(setup.data.train_x))
    generator = torch.Generator().manual_seed(int(settings.seed) + 31)
    index = torch.randperm(len(setup.data.train_x), generator=generator)[:samples].to(setup.data.train_x.device)
    x, y = setup.data.train_x[index], setup.data.train_y[index]

    def with_fishers():
        for ref in setup.refs:
            state = load_weights(ref, setup.device)
            setup.model.load_state_dict(state)
            fisher = diagonal_fisher(setup.model, x, y, kind=params["fisher.kind"])
            # A masked weight has zero gradient where masked: the floor keeps 0/0 out of the mean.
            yield state, fisher

    merged = merge_states(with_fishers(), weights, floor=params["fisher.floor"])
    final = common.save_merged(run, setup, merged)
    return soup_summary(setup, final, rows, "fisher", {"fisher_samples": samples})
