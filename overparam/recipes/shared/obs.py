"""Optimal Brain Surgeon reconstruction of one layer, as IST-DASLab/sparsegpt's `SparseGPT.fasterprune` (and,
with a quantizer, IST-DASLab/gptq's `GPTQ.fasterquant`).

A layer's weight W (rows x columns; a convolution's flattened to out x in*kernel) is processed column by
column: each column is pruned (its adaptive mask chosen per block of `blocksize` columns by w^2 / [H^-1]_jj^2,
or N:M within each group of M columns) and optionally quantized, and the error it leaves is spread over the
columns still to come through the upper Cholesky factor of the inverse Hessian (H = 2/n X X^T of the layer's
calibration inputs, dampened by `percdamp` of its mean diagonal). Updates inside a block are applied at once
per column; those to later columns are batched per block ("lazy" updates), as their code does.

The quantizer hook (`quantizer=`) is GPTQ's: any object with

    ready() -> bool                        True once it has parameters (scale, zero) to quantize with
    find_params(w, weight=True) -> None    fit its parameters to the (rows, k) weight slice `w`, one set per row
                                           (or per tensor, as the quantizer is configured)
    quantize(x) -> Tensor                  x of shape (rows, 1): one column, quantized and dequantized back
                                           (same shape and dtype; 0 must stay 0 so pruned weights stay pruned)

`fasterprune` calls `find_params(W)` once on the whole weight when the quantizer is not `ready()`; with
`groupsize > 0` it calls `find_params(W[:, j:j + groupsize])` at every group boundary j (on W as it stands
then: lazily updated up to the current block, as in GPTQ), or with `static_groups` once per group before any
update; `actorder` processes columns by decreasing Hessian diagonal (GPTQ's act-order) and restores the order
after. GPTQ is `fasterprune(W, H, sparsity=0, quantizer=q, ...)`: with nothing pruned this is their fasterquant.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch


class Hessian:
    """H = 2/n * sum of x x^T over the calibration inputs of a layer, accumulated batch by batch as sparsegpt's
    `add_batch` (running rescale, then sqrt(2/n) x added); n counts the batches' leading dimension: sequences
    of a language model's (batch, tokens, features) input, examples of a classifier's (batch, features)."""

    def __init__(self, columns: int, device=None, dtype: torch.dtype = torch.float32):
        self.matrix = torch.zeros((columns, columns), device=device, dtype=dtype)
        self.samples = 0

    def add_batch(self, inputs: torch.Tensor) -> None:
        """Add a batch of inputs: (batch, ..., columns); every row of the flattened batch is one x."""
        if inputs.dim() == 1:
            inputs = inputs.unsqueeze(0)
        # Only H's scale depends on the count, and OBS is invariant to it (the dampening is relative).
        count = inputs.shape[0]
        flat = inputs.reshape(-1, inputs.shape[-1]).to(self.matrix.dtype)
        self.matrix *= self.samples / (self.samples + count)
        self.samples += count
        flat = math.sqrt(2 / self.samples) * flat
        self.matrix += flat.T @ flat


@dataclass
class Reconstruction:
    """What `fasterprune` returns: the new weight (pruned and/or quantized), the mask of kept weights (True =
    kept), and the OBS loss per row (sum over columns of (w - q)^2 / [H^-1]_jj^2, halved, as their Losses)."""

    weight: torch.Tensor
    mask: torch.Tensor
    loss: torch.Tensor


def _inverse_cholesky(hessian: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp I)^-1, damp = percdamp * mean(diag H)."""
    damp = percdamp * torch.mean(torch.diag(hessian))
    diagonal = torch.arange(hessian.shape[0], device=hessian.device)
    hessian[diagonal, diagonal] += damp
    factor = torch.linalg.cholesky(hessian)
    inverse = torch.cholesky_inverse(factor)
    return torch.linalg.cholesky(inverse, upper=True)


@torch.no_grad()
def fasterprune(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float = 0.0, *, prunen: int = 0,
                prunem: int = 0, blocksize: int = 128, percdamp: float = 0.01, quantizer=None, groupsize: int = -1,
                actorder: bool = False, static_groups: bool = False) -> Reconstruction:
    """SparseGPT's reconstruction of `weight` (rows x columns) given `hessian` (columns x columns).

    Unstructured when `prunen == 0` (a fraction `sparsity` chosen per block of columns, adaptively); else in
    every group of `prunem` consecutive columns of a row the `prunen` weights with the smallest
    w^2 / [H^-1]_jj^2 are pruned (2:4 is prunen=2, prunem=4; `sparsity` is then unused). Computes in float64
    when the weight is float64, else in float32 (as their code). Neither argument is modified.
    `quantizer`, `groupsize`, `actorder`, `static_groups`: the quantizer hook (module doc). One departure from
    their code: `sparsity=0` prunes nothing (their threshold rule would still prune the smallest score of every
    block), so that a quantizer alone is exactly GPTQ.
    """
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    W = weight.detach().flatten(1).to(dtype).clone()
    rows, columns = W.shape
    H = hessian.detach().to(device=W.device, dtype=dtype).clone()
    if prunen and columns % prunem:
        raise ValueError(f"{prunen}:{prunem} needs a row length divisible by {prunem}, got {columns}")

    if quantizer is not None and not quantizer.ready():
        quantizer.find_params(W, weight=True)

    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    groups = None
    if quantizer is not None and static_groups and groupsize > 0:
        groups = []
        for start in range(0, columns, groupsize):
            group = copy.deepcopy(quantizer)
            group.find_params(W[:, start:start + groupsize], weight=True)
            groups.append(group)

    perm = None
    if actorder:
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]

    Hinv = _inverse_cholesky(H, percdamp)
    del H
    losses = torch.zeros(rows, device=W.device, dtype=dtype)
    pruned = torch.zeros_like(W, dtype=torch.bool)

    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        diag1 = torch.diag(Hinv1)

        if prunen == 0:
            if sparsity > 0:
                # Their threshold: the value at rank int(numel * sparsity); everything at or below it is pruned.
                scores = W1 ** 2 / diag1.reshape((1, -1)) ** 2
                thresh = torch.sort(scores.flatten())[0][int(scores.numel() * sparsity)]
                mask1 = scores <= thresh
            else:
                mask1 = torch.zeros_like(W1, dtype=torch.bool)
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)

        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]

            if prunen != 0 and i % prunem == 0:
                scores = W1[:, i:i + prunem] ** 2 / diag1[i:i + prunem].reshape((1, -1)) ** 2
                mask1.scatter_(1, i + torch.topk(scores, prunen, dim=1, largest=False)[1], True)

            q = w.clone()
            q[mask1[:, i]] = 0

            if quantizer is not None:
                if groupsize > 0:
                    if groups is not None:
                        column = i1 + i if perm is None else int(perm[i1 + i])
                        quantizer = groups[column // groupsize]
                    elif (i1 + i) % groupsize == 0:
                        quantizer.find_params(W[:, i1 + i:i1 + i + groupsize], weight=True)
                q = quantizer.quantize(q.unsqueeze(1)).flatten().to(dtype)

            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d ** 2
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1

        W[:, i1:i2] = Q1
        pruned[:, i1:i2] = mask1
        losses += torch.sum(Losses1, 1) / 2
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])

    if perm is not None:
        inverse = torch.argsort(perm)
        W, pruned = W[:, inverse], pruned[:, inverse]
    return Reconstruction(weight=W.reshape(weight.shape).to(weight.dtype), mask=(~pruned).reshape(weight.shape),
                          loss=losses)
