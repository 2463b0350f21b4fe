"""Generalization measures of one trained network (Jiang et al. 2020, "Fantastic Generalization
Measures and Where to Find Them", ICLR 2020, Appendix C) and their rank correlation with the gap.

Definitions follow the paper's appendix as implemented by Dziugaite et al. 2020 ("In search of
robust measures of generalization", github.com/nitarshan/robust-generalization-measures,
`data/generation/measures.py`), with these choices, each named where it is made:

- *weights* are the parameters with two or more dimensions (Linear and Conv kernels, reshaped to
  `(out, -1)`); biases and normalization parameters are left out, as that code's blacklist does.
  Masked weights are exactly zero in a saved checkpoint, so a pruned net's norms count what it kept.
- the *margin* gamma is the `percentile`-th percentile (10th, the paper's choice) of the output margins
  `f(x)[y] - max_{j != y} f(x)[j]` over the training set, in absolute value.
- every measure is oriented so that larger predicts a larger generalization gap; the paper's
  `sqrt(measure / m)` size adjustment is omitted, since it does not change a rank correlation over a
  sweep on one dataset.
- BatchNorm is not folded into the preceding layer (that code's `_reparam`): the zoo's MLPs have none,
  and for BN nets the norms are those of the raw parameters.
"""

from __future__ import annotations

import math
import warnings
from itertools import combinations
from typing import Callable

import torch
import torch.nn.functional as F

MEASURES = (
    "parameters", "l2", "distance_from_init", "inverse_margin",
    "log_prod_spec", "log_prod_spec_over_margin", "log_spec_orig", "fro_over_spec",
    "log_prod_fro", "log_prod_fro_over_margin",
    "path_norm", "path_norm_over_margin", "fisher_rao",
    "pacbayes_init", "pacbayes_flatness", "pacbayes_mag_init", "pacbayes_mag_flatness", "sharpness_mag_flatness",
)


def weight_tensors(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of the weights the norm measures use: parameters with 2+ dimensions, in order."""
    return [(name, p.detach()) for name, p in model.named_parameters() if p.dim() >= 2]


def margins(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Output margin of every example: the true class's logit minus the largest other logit."""
    out = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size]).double()
            target = y[start:start + batch_size]
            rows = torch.arange(len(target), device=logits.device)
            correct = logits[rows, target].clone()
            logits[rows, target] = float("-inf")
            out.append(correct - logits.max(dim=1).values)
    model.train(was_training)
    return torch.cat(out)


def margin_percentile(values: torch.Tensor, percentile: float = 10.0) -> float:
    """|k-th smallest margin| with k = floor(m * percentile / 100) (at least 1), as that code's kthvalue(m // 10)."""
    k = max(1, int(len(values) * percentile / 100.0))
    return abs(float(values.kthvalue(k).values))


def path_norm(model: torch.nn.Module, input_shape: tuple[int, ...]) -> float:
    """sum_i f_{w^2}(1)[i]: the network with every parameter squared, applied to an all-ones input (eq. 44)."""
    import copy

    squared = copy.deepcopy(model).eval()
    with torch.no_grad():
        for p in squared.parameters():
            p.pow_(2)
        first = next(model.parameters())
        ones = torch.ones((1, *input_shape), device=first.device, dtype=first.dtype)
        return float(squared(ones).double().sum())


def fisher_rao(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> float:
    """(d+1)^2 / m * sum_i <w, grad_w loss(f_w(x_i), y_i)>^2 (Jiang et al. eq. 45, Liang et al. 2019).

    d is the number of weight tensors, w the weights (biases held fixed), the loss cross-entropy on the
    training labels. <w, grad_w loss_i> is the derivative of loss_i along w, so one forward-mode pass
    (`torch.func.jvp` in the direction of the weights) gives it for every example at once.
    """
    from torch.func import functional_call, jvp

    names = [name for name, _ in weight_tensors(model)]
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b for name, b in model.named_buffers()}
    depth = len(names)
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]

        def losses(*weights):
            state = {**params, **dict(zip(names, weights)), **buffers}
            return F.cross_entropy(functional_call(model, state, (xb,)), yb, reduction="none")

        primals = tuple(params[name] for name in names)
        with warnings.catch_warnings():
            # torch's forward mode loads its decompositions through torch.jit.script on first use, which
            # warns that jit is deprecated: a note about torch's internals, not about this computation.
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            _, directional = jvp(losses, primals, primals)
        total += float((directional.double() ** 2).sum())
    model.train(was_training)
    return (depth + 1) ** 2 * total / max(len(x), 1)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> float:
    """Fraction of (x, y) classified correctly."""
    with torch.no_grad():
        correct = sum(int((model(x[s:s + batch_size]).argmax(1) == y[s:s + batch_size]).sum())
                      for s in range(0, len(x), batch_size))
    return correct / max(len(x), 1)


def bisect_sigma(deviation: Callable[[float], float], target: float = 0.1, tolerance: float = 0.01,
                 lower: float = 0.0, upper: float = 2.0, depth: int = 15) -> float:
    """The sigma at which `deviation(sigma)` (increasing in sigma) reaches `target`, by bisection.

    That code's `_pacbayes_sigma`: start from [0, 2], stop after `depth` halvings or once the deviation is
    within `tolerance` of the target; too much deviation lowers the upper end, too little raises the lower.
    """
    sigma = (lower + upper) / 2
    for _ in range(depth):
        sigma = (lower + upper) / 2
        found = deviation(sigma)
        if abs(found - target) < tolerance:
            break
        if found > target:
            upper = sigma
        else:
            lower = sigma
    return sigma


def perturbed_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float,
                       generator: torch.Generator, samples: int, magnitude_eps: float | None = None) -> float:
    """Mean training accuracy of `samples` draws of w + u.

    u ~ N(0, sigma^2) on every parameter, or with `magnitude_eps`, the magnitude-aware
    u_i ~ N(0, sigma^2 w_i^2 + eps^2) (Jiang et al. Sec. C.5: variance, so the standard deviation is
    its square root; that code passes the variance as the standard deviation instead).
    """
    params = list(model.parameters())
    originals = [p.detach().clone() for p in params]
    results = []
    try:
        for _ in range(samples):
            with torch.no_grad():
                for p, original in zip(params, originals):
                    noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
                    scale = (sigma ** 2 * original ** 2 + magnitude_eps ** 2).sqrt() if magnitude_eps is not None \
                        else sigma
                    p.copy_(original + noise * scale)
            results.append(accuracy(model, x, y))
    finally:
        with torch.no_grad():
            for p, original in zip(params, originals):
                p.copy_(original)
    return sum(results) / len(results)


def pacbayes_sigma(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, *, samples: int = 10,
                   target: float = 0.1, tolerance: float = 0.01, depth: int = 15,
                   magnitude_eps: float | None = None) -> float:
    """Largest sigma whose Gaussian perturbation moves the training accuracy by about `target` (Jiang et al. C.5)."""
    model.eval()
    base = accuracy(model, x, y)
    generator = torch.Generator().manual_seed(10348628753 + int(seed))
    return bisect_sigma(lambda s: abs(perturbed_accuracy(model, x, y, s, generator, samples, magnitude_eps) - base),
                        target=target, tolerance=tolerance, depth=depth)


def worst_case_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float,
                        generator: torch.Generator, magnitude_eps: float = 1e-3, steps: int = 10) -> float:
    """Training accuracy after an adversarial perturbation in the box |u_i| <= alpha |w_i| + eps.

    Jiang et al. Sec. C.4 (magnitude-aware sharpness): the perturbation that most raises the training
    loss, found here by `steps` of projected sign-gradient ascent on the cross-entropy from a seeded
    random point in the box (step: a fifth of the box per step). The weights are restored after.
    """
    params = list(model.parameters())
    originals = [p.detach().clone() for p in params]
    radii = [alpha * o.abs() + magnitude_eps for o in originals]
    perturbation = [(torch.rand(o.shape, generator=generator, dtype=o.dtype).to(o.device) * 2 - 1) * r
                    for o, r in zip(originals, radii)]
    try:
        for _ in range(steps):
            with torch.no_grad():
                for p, o, u in zip(params, originals, perturbation):
                    p.copy_(o + u)
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            with torch.no_grad():
                for p, u, r in zip(params, perturbation, radii):
                    if p.grad is not None:
                        u.add_(p.grad.sign() * r / 5).clamp_(min=-r, max=r)
        with torch.no_grad():
            for p, o, u in zip(params, originals, perturbation):
                p.copy_(o + u)
        return accuracy(model, x, y)
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p, o in zip(params, originals):
                p.copy_(o)


def sharpness_alpha(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, *, target: float = 0.1,
                    tolerance: float = 0.01, depth: int = 15, magnitude_eps: float = 1e-3) -> float:
    """Largest alpha whose worst-case magnitude-aware perturbation moves training accuracy by `target`."""
    model.eval()
    base = accuracy(model, x, y)
    generator = torch.Generator().manual_seed(10348628753 + int(seed))
    return bisect_sigma(lambda a: abs(worst_case_accuracy(model, x, y, a, generator, magnitude_eps) - base),
                        target=target, tolerance=tolerance, depth=depth)


def all_measures(model: torch.nn.Module, init: dict, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0,
                 percentile: float = 10.0, samples: int = 10, target: float = 0.1, depth: int = 15,
                 magnitude_eps: float = 1e-3) -> dict[str, float]:
    """Every measure in MEASURES for `model`, with `init` ({name: tensor}) its weights at initialization."""
    model.eval()
    weights = weight_tensors(model)
    w = torch.cat([t.reshape(-1).double() for _, t in weights])
    dist = torch.cat([(t.double() - init[name].double().to(t.device)).reshape(-1) for name, t in weights])
    matrices = [t.double().reshape(t.shape[0], -1) for _, t in weights]
    fro = torch.stack([m.pow(2).sum() for m in matrices])
    spec = torch.stack([torch.linalg.matrix_norm(m, ord=2) ** 2 for m in matrices])
    gamma = margin_percentile(margins(model, x, y), percentile)
    log_margin2 = 2 * math.log(gamma) if gamma > 0 else float("-inf")
    m = len(x)
    out: dict[str, float] = {
        "parameters": float(sum(p.numel() for p in model.parameters())),
        "l2": float(w.norm()),
        "distance_from_init": float(dist.norm()),
        "inverse_margin": 1.0 / gamma ** 2 if gamma > 0 else float("inf"),
        "log_prod_spec": float(spec.log().sum()),
        "log_prod_fro": float(fro.log().sum()),
        "fro_over_spec": float((fro / spec).sum()),
        "margin": gamma,
    }
    out["log_prod_spec_over_margin"] = out["log_prod_spec"] - log_margin2
    out["log_prod_fro_over_margin"] = out["log_prod_fro"] - log_margin2
    out["log_spec_orig"] = out["log_prod_spec_over_margin"] + math.log(out["fro_over_spec"])
    out["path_norm"] = path_norm(model, tuple(x.shape[1:]))
    out["path_norm_over_margin"] = out["path_norm"] / gamma ** 2 if gamma > 0 else float("inf")
    out["fisher_rao"] = fisher_rao(model, x, y)
    sigma = pacbayes_sigma(model, x, y, seed, samples=samples, target=target, depth=depth)
    mag_sigma = pacbayes_sigma(model, x, y, seed, samples=samples, target=target, depth=depth,
                               magnitude_eps=magnitude_eps)
    out["pacbayes_sigma"], out["pacbayes_mag_sigma"] = sigma, mag_sigma
    out["pacbayes_init"] = float(dist.pow(2).sum()) / (4 * sigma ** 2) + math.log(m / sigma) + 10
    out["pacbayes_flatness"] = 1.0 / sigma ** 2
    # Magnitude-aware bound (Jiang et al. eq. 56), over the weights as the norms are.
    omega = len(w)
    numerator = magnitude_eps ** 2 + (mag_sigma ** 2 + 1) * float(dist.pow(2).sum()) / omega
    denominator = magnitude_eps ** 2 + mag_sigma ** 2 * dist.pow(2)
    out["pacbayes_mag_init"] = 0.25 * float((numerator / denominator).log().sum()) + math.log(m / mag_sigma) + 10
    out["pacbayes_mag_flatness"] = 1.0 / mag_sigma ** 2
    alpha = sharpness_alpha(model, x, y, seed, target=target, depth=depth, magnitude_eps=magnitude_eps)
    out["sharpness_mag_alpha"] = alpha
    out["sharpness_mag_flatness"] = 1.0 / alpha ** 2
    return out


# --- rank correlation ---------------------------------------------------------------------------

def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def kendall_tau(measure: list[float], gap: list[float]) -> float | None:
    """Jiang et al. eq. 4: mean of sign(mu_i - mu_j) * sign(g_i - g_j) over ordered pairs; None below 2 runs."""
    pairs = list(combinations(range(len(measure)), 2))
    if not pairs:
        return None
    return sum(_sign(measure[i] - measure[j]) * _sign(gap[i] - gap[j]) for i, j in pairs) / len(pairs)


def granulated_tau(values: list[float], gaps: list[float], settings: list[dict], key: str) -> float | None:
    """psi_key (Jiang et al. eq. 5): the mean tau over groups of runs where only `key` varies.

    Runs are grouped by their values of every other swept key; groups with fewer than two runs or a
    single value of `key` say nothing about it and are skipped. None when no group remains.
    """
    groups: dict[str, list[int]] = {}
    for index, setting in enumerate(settings):
        rest = repr(sorted((k, repr(v)) for k, v in setting.items() if k != key))
        groups.setdefault(rest, []).append(index)
    taus = []
    for members in groups.values():
        if len(members) < 2 or len({repr(settings[i].get(key)) for i in members}) < 2:
            continue
        tau = kendall_tau([values[i] for i in members], [gaps[i] for i in members])
        if tau is not None:
            taus.append(tau)
    return sum(taus) / len(taus) if taus else None
