"""Per-tensor merges that need every model's copy of a tensor at once: SLERP, NuSLERP, the Karcher mean,
Model Stock and SCE. Each takes float64 tensors and returns one, with mergekit's arithmetic (its guards
against colinear, zero and singular inputs included), so the two agree in float64.
"""

from __future__ import annotations

import torch


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, dot_threshold: float = 0.9995,
          eps: float = 1e-8) -> torch.Tensor:
    """Spherical interpolation from v0 (t=0) to v1 (t=1), row by row along the first axis (each output
    unit on its own, as mergekit's slerp since 0.1.5). A row whose norm is below `eps` is used unnormalized;
    rows whose directions' |cos| exceeds `dot_threshold` (near colinear or antipodal) interpolate linearly."""
    a = v0.reshape(v0.shape[0], -1) if v0.dim() else v0.reshape(1, 1)
    b = v1.reshape(a.shape)
    if not a.shape[1]:
        return ((1 - t) * a + t * b).reshape(v0.shape)
    norm_a = torch.linalg.vector_norm(a, dim=1, keepdim=True)
    norm_b = torch.linalg.vector_norm(b, dim=1, keepdim=True)
    norm_a = torch.where(norm_a > eps, norm_a, 1)
    norm_b = torch.where(norm_b > eps, norm_b, 1)
    dot = ((a / norm_a) * (b / norm_b)).sum(dim=1, keepdim=True).clamp(-1, 1)
    linear = dot.abs() > dot_threshold
    theta = torch.acos(torch.where(linear, 0, dot))
    sin_theta = torch.sin(theta)
    coef_a = torch.where(linear, 1 - t, torch.sin((1 - t) * theta) / sin_theta)
    coef_b = torch.where(linear, t, torch.sin(t * theta) / sin_theta)
    return (coef_a * a + coef_b * b).reshape(v0.shape)


def nuslerp(t: float, v0: torch.Tensor, v1: torch.Tensor, row_wise: bool = False, flatten: bool = True,
            eps: float = 1e-8) -> torch.Tensor:
    """mergekit's NuSLERP of two tensors: over the whole tensor flattened (`flatten`), else along the last
    axis (each row) or, `row_wise`, along the first (each column). Colinear pairs (1 - cos^2 <= eps^2)
    interpolate linearly."""
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif row_wise:
        v0, v1 = v0.transpose(0, -1), v1.transpose(0, -1)

    def unit(x):
        return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=1e-7)

    cos_theta = torch.sum(unit(v0) * unit(v1), dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos_theta.square()) <= eps ** 2
    theta = torch.acos(torch.where(colinear, 0, cos_theta))
    sin_theta = torch.sin(theta)
    result = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / sin_theta
    result = torch.where(colinear, (1 - t) * v0 + t * v1, result)
    if row_wise and not flatten:
        result = result.transpose(0, -1)
    return result.reshape(shape)


def karcher(tensors: list, weights: list, max_iter: int = 10, tol: float = 1e-5) -> torch.Tensor:
    """The weighted Karcher (Riemannian) mean of the tensors' directions on the unit sphere, scaled by the
    weighted mean of their norms (mergekit's karcher): gradient steps along the tangent space until its
    norm falls below `tol` or `max_iter` steps; tensors of norm <= tol take no part in the direction."""
    if len(tensors) == 1:
        return tensors[0]
    norms = [torch.linalg.vector_norm(x) for x in tensors]
    units = [torch.zeros_like(x) if float(n) == 0.0 else x / n for x, n in zip(tensors, norms)]
    valid = [i for i, n in enumerate(norms) if float(n) > tol]
    if not valid:
        return sum(x * 0 for x in tensors)
    total = sum(weights[i] for i in valid)
    alphas = [weights[i] / total for i in valid]
    valid_units = [units[i] for i in valid]
    mean = torch.zeros_like(valid_units[0])
    for alpha, unit in zip(alphas, valid_units):
        mean += alpha * unit
    mean_norm = torch.linalg.vector_norm(mean)
    mean = valid_units[0].clone() if float(mean_norm) < tol else mean / mean_norm
    for _ in range(int(max_iter)):
        tangent = torch.zeros_like(mean)
        for alpha, unit in zip(alphas, valid_units):
            dot = torch.clamp(torch.dot(mean.flatten(), unit.flatten()), -1.0, 1.0)
            theta = torch.arccos(dot)
            if float(theta) < tol:
                continue
            tangent += alpha * (theta / torch.sin(theta)) * (unit - dot * mean)
        tangent_norm = torch.linalg.vector_norm(tangent)
        if float(tangent_norm) < tol:
            break
        mean = torch.cos(tangent_norm) * mean + torch.sin(tangent_norm) * (tangent / tangent_norm)
        unit_norm = torch.linalg.vector_norm(mean)
        if float(unit_norm) > tol:
            mean = mean / unit_norm
    return sum(w * n for w, n in zip(weights, norms)) * mean


def model_stock(base: torch.Tensor, tensors: list, filter_wise: bool = False) -> torch.Tensor:
    """Model Stock (Jang et al. 2024): t = k cos / (1 + (k - 1) cos), cos the mean pairwise cosine of the
    k fine-tuned offsets from the base (over the whole tensor, or per row with `filter_wise`), merged =
    t * mean(fine-tuned) + (1 - t) * base; where 1 + (k - 1) cos is within 1e-6 of zero, the base (mergekit)."""
    shape = base.shape
    if filter_wise:
        if base.dim() == 1:
            base, tensors = base.unsqueeze(0), [x.unsqueeze(0) for x in tensors]
    else:
        base, tensors = base.reshape(-1), [x.reshape(-1) for x in tensors]
    offsets = [x - base for x in tensors]
    cosines = []
    for index, first in enumerate(offsets):
        for second in offsets[index + 1:]:
            product = torch.norm(first, dim=-1) * torch.norm(second, dim=-1)
            cosines.append(((first * second).sum(dim=-1) / product.clamp(min=1e-6)).clamp(-1, 1))
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    k = len(tensors)
    denominator = 1 + (k - 1) * cos
    singular = denominator.abs() < 1e-6
    t = torch.where(singular, torch.zeros_like(cos), (k * cos) / torch.where(singular, 1, denominator))
    return (t * (sum(tensors) / k) + (1 - t) * base).reshape(shape)


def sce(base: torch.Tensor, tensors: list, select_topk: float = 1.0) -> torch.Tensor:
    """SCE (Wan et al. 2024), as mergekit: Select the int(select_topk * nonzero) entries whose task vectors
    vary most across models (population variance), Calculate each model's weight as the mean square of
    its selected task vector over their sum (uniform when the sum is below 1e-6), Erase entries whose sign
    disagrees with the sign of the summed task vectors (zero sums count as positive), then the weighted
    mean of what remains."""
    vectors = torch.stack([x - base for x in tensors], dim=0)
    if select_topk < 1:
        if select_topk <= 0:
            mask = torch.zeros_like(vectors[0])
        else:
            var = torch.var(vectors, dim=0, unbiased=False)
            count = int(torch.count_nonzero(var) * select_topk)
            mask = torch.zeros_like(var)
            if count:
                mask.view(-1)[torch.topk(var.abs().view(-1), k=count, largest=True).indices] = 1
        vectors = vectors * mask.unsqueeze(0)
    majority = (vectors.sum(dim=0) >= 0).to(vectors.dtype) * 2 - 1
    erase = vectors.sign() == majority
    weights = vectors.square().reshape(vectors.shape[0], -1).mean(dim=1)
    total = float(torch.sum(weights))
    weights = torch.ones_like(weights) / weights.shape[0] if abs(total) < 1e-6 else weights / total
    weights = weights.reshape(-1, *([1] * (vectors.dim() - 1)))
    erased = weights * erase
    return base + (vectors * erased).sum(dim=0) / torch.sum(erased, dim=0).clamp(min=1e-6)
