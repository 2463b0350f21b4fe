"""State-dict arithmetic every merge shares: loading an ingredient's weights, streaming them one at a
time, float64 weighted means, and masks that keep pruned weights exactly zero."""

from __future__ import annotations

from typing import Iterable, Iterator

from overparam.errors import UserError
from overparam.store.load import RunRef

MASK_SUFFIX = "_mask"


def load_weights(ref: RunRef, device: str = "cpu") -> dict:
    """The flat state_dict an ingredient saved."""
    import torch

    from overparam.store.checkpoint import load_state

    state = load_state(ref.weights, device=device)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{ref.weights} is not a model state_dict")
    from overparam.models.quantized import dequantize_state, is_packed

    return dequantize_state(state) if is_packed(state) else state


def is_mask(key: str) -> bool:
    return key.endswith(MASK_SUFFIX)


def is_averaged(key: str, value) -> bool:
    """Floating tensors that merges combine (masks and integer counters are carried over instead)."""
    return value.is_floating_point() and not is_mask(key)


def weighted_average(states: Iterable[dict], weights: Iterable[float] | None = None) -> dict:
    """Streaming weighted mean of state_dicts: one ingredient at a time, float64 accumulators.

    Masks and integer buffers are taken from the first state; masked weights stay exactly zero.
    """
    import torch

    total: dict | None = None
    weight_sum = 0.0
    weights_iter = iter(weights) if weights is not None else None
    for state in states:
        weight = float(next(weights_iter)) if weights_iter is not None else 1.0
        if total is None:
            total = {k: (v.double() * weight if is_averaged(k, v) else v.clone()) for k, v in state.items()}
        else:
            for k, v in state.items():
                if is_averaged(k, v):
                    total[k].add_(v.double(), alpha=weight)
        weight_sum += weight
        del state
    if total is None:
        raise UserError("nothing to average: no ingredients")
    if weight_sum == 0:
        raise UserError("ingredient weights sum to zero")
    return finish_state({k: (v / weight_sum if v.dtype == torch.float64 and not is_mask(k) else v)
                         for k, v in total.items()})


def finish_state(state: dict, like: dict | None = None) -> dict:
    """Cast accumulators back to float32 (or `like`'s dtypes) and zero the weights that masks remove."""
    import torch

    out = {}
    for k, v in state.items():
        target = like[k].dtype if like is not None and k in like else (torch.float32 if v.dtype == torch.float64 else v.dtype)
        out[k] = v.to(target)
    return apply_state_masks(out)


def apply_state_masks(state: dict) -> dict:
    """Multiply every `<name>` by its `<name>_mask` (so masked entries are exactly zero)."""
    for k in list(state):
        if is_mask(k):
            weight_key = k[: -len(MASK_SUFFIX)]
            if weight_key in state:
                state[weight_key] = state[weight_key] * state[k].to(state[weight_key].dtype)
    return state


def stream(refs: list[RunRef], device: str = "cpu") -> Iterator[dict]:
    """Ingredients' state_dicts, one at a time."""
    for ref in refs:
        yield load_weights(ref, device)


class LazyState:
    """An ingredient's weights read one tensor at a time (`state[key]`), for merges that need every
    model's copy of one tensor at once: memory holds one tensor per model, not whole models.
    A checkpoint whose tensors are nested under a skeleton is read whole instead."""

    def __init__(self, ref: RunRef, device: str = "cpu") -> None:
        from safetensors import safe_open

        from overparam.store.checkpoint import SKELETON_KEY

        self.ref, self.device = ref, device
        try:
            self._handle = safe_open(str(ref.weights), framework="pt", device=device)
            nested = SKELETON_KEY in (self._handle.metadata() or {})
        except Exception as exc:  # safetensors raises several types for a damaged file
            raise UserError(f"corrupt checkpoint {ref.weights}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        self._whole = load_weights(ref, device) if nested else None

    def keys(self) -> list:
        return list(self._whole) if self._whole is not None else list(self._handle.keys())

    def __getitem__(self, key: str):
        return self._whole[key] if self._whole is not None else self._handle.get_tensor(key)


def lazy(refs: list[RunRef], device: str = "cpu") -> list[LazyState]:
    """Every ingredient opened for reading tensor by tensor."""
    return [LazyState(ref, device) for ref in refs]
