"""Permutation symmetries of the zoo's networks, declared as data, and weight matching.

A hidden unit of a layer can be moved to another position without changing the function the
network computes, as long as every tensor that reads or writes that unit moves with it. A
`PermutationSpec` records, for every entry of a `state_dict`, which permutation acts on each of its
axes (git-re-basin's layout). Specs are derived from a model's structure, never written by hand:

- a chain of Linear / Conv / BatchNorm layers (MLPs, cnn1d, conv-N, VGG): each Linear/Conv output
  gets its own permutation, the next layer's input and any BatchNorm in between follow it; a
  Linear reading flattened C x H x W features sees the channel permutation in blocks of H*W;
- residual networks (`resnet*`): every block's output is added to the stream it reads, so the
  whole stream of a stage shares one permutation (a projection shortcut starts a new one).

`spec_for(model, input_shape)` derives the spec and checks it: a random permutation must leave
the outputs unchanged, else it refuses rather than return a wrong spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

from overparam.errors import UserError
from overparam.models.paths import modules_of_type
from overparam.models.taps import FeatureTap

# An axis entry: (permutation name, block) - the axis has n*block entries and unit i owns the
# contiguous block [i*block, (i+1)*block) (block > 1 where a Linear reads flattened feature maps).
Axis = tuple[str, int] | None


@dataclass
class PermutationSpec:
    """`axes[key]` lists, per axis of `state_dict[key]`, the permutation acting on it (or None)."""

    axes: dict[str, tuple[Axis, ...]]
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def perm_to_axes(self) -> dict[str, list[tuple[str, int, int]]]:
        """{perm: [(key, axis, block), ...]}: every tensor axis a permutation moves."""
        out: dict[str, list[tuple[str, int, int]]] = {name: [] for name in self.sizes}
        for key, axes in self.axes.items():
            for axis, entry in enumerate(axes):
                if entry is not None:
                    out[entry[0]].append((key, axis, entry[1]))
        return out


def _permute_axis(tensor: torch.Tensor, axis: int, perm: torch.Tensor, block: int) -> torch.Tensor:
    """`tensor` with units along `axis` reordered so that new unit i is old unit perm[i]."""
    if block == 1:
        return tensor.index_select(axis, perm)
    shape = tensor.shape
    units = shape[axis] // block
    grouped = tensor.reshape(*shape[:axis], units, block, *shape[axis + 1:])
    return grouped.index_select(axis, perm).reshape(shape)


def apply_permutation(spec: PermutationSpec, perms: dict[str, torch.Tensor], state: dict) -> dict:
    """A new state_dict with every permuted axis reordered (new unit i = old unit perms[p][i])."""
    out = {}
    for key, value in state.items():
        axes = spec.axes.get(key)
        if axes is None or not isinstance(value, torch.Tensor):
            out[key] = value
            continue
        for axis, entry in enumerate(axes):
            if entry is not None:
                value = _permute_axis(value, axis, perms[entry[0]].to(value.device), entry[1])
        out[key] = value
    return out


def random_permutations(spec: PermutationSpec, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One uniformly random permutation per group (for tests and symmetry checks)."""
    return {name: torch.randperm(size, generator=generator) for name, size in spec.sizes.items()}


def _unit_rows(tensor: torch.Tensor, axis: int, block: int) -> torch.Tensor:
    """`tensor` as a (units, everything else) matrix, units taken along `axis` in blocks."""
    moved = torch.movedim(tensor, axis, 0)
    units = moved.shape[0] // block
    return moved.reshape(units, -1)


def weight_matching(spec: PermutationSpec, reference: dict, other: dict, *, max_iterations: int = 100,
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """Permutations that make `other` closest to `reference` (Ainsworth et al. 2023, weight matching).

    Coordinate descent: for one group at a time, with the others fixed, maximize
    sum_key <reference[key], permuted other[key]> by a linear assignment; repeat in random order
    until a full sweep improves no group.
    """
    from scipy.optimize import linear_sum_assignment

    perms = {name: torch.arange(size) for name, size in spec.sizes.items()}
    by_perm = spec.perm_to_axes
    names = sorted(spec.sizes)
    generator = torch.Generator().manual_seed(seed)
    # float32 products: the assignment only needs the ranking of similarities, and float64
    # matrix products cost several times more on a CPU.
    ref = {k: v.detach().float().cpu() for k, v in reference.items() if k in spec.axes}
    oth = {k: v.detach().float().cpu() for k, v in other.items() if k in spec.axes}
    for _ in range(max_iterations):
        improved = False
        for index in torch.randperm(len(names), generator=generator).tolist():
            name = names[index]
            size = spec.sizes[name]
            similarity = torch.zeros(size, size, dtype=torch.float32)
            for key, axis, block in by_perm[name]:
                if key not in ref:
                    continue
                moved_other = oth[key]
                # Apply every other permutation acting on this tensor, then compare unit rows.
                for other_axis, entry in enumerate(spec.axes[key]):
                    if entry is not None and other_axis != axis:
                        moved_other = _permute_axis(moved_other, other_axis, perms[entry[0]], entry[1])
                similarity += _unit_rows(ref[key], axis, block) @ _unit_rows(moved_other, axis, block).T
            similarity = similarity.double()
            rows, cols = linear_sum_assignment(similarity.numpy(), maximize=True)
            new_perm = torch.as_tensor(cols, dtype=torch.long)
            old_score = float(similarity[torch.arange(size), perms[name]].sum())
            new_score = float(similarity[torch.arange(size), new_perm].sum())
            if new_score > old_score + 1e-12 * max(1.0, abs(old_score)):
                perms[name] = new_perm
                improved = True
        if not improved:
            break
    return perms


def align(spec: PermutationSpec, reference: dict, other: dict, **kwargs) -> dict:
    """`other` permuted to match `reference` by weight matching."""
    return apply_permutation(spec, weight_matching(spec, reference, other, **kwargs), other)


# --- deriving specs --------------------------------------------------------------------------

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def _layer_entries(name: str, module: nn.Module, out_perm: Axis, in_perm: Axis) -> dict[str, tuple[Axis, ...]]:
    """Axes of one layer's tensors (weight, its mask, bias; norm parameters and statistics)."""
    prefix = f"{name}." if name else ""
    entries: dict[str, tuple[Axis, ...]] = {}
    if isinstance(module, _WEIGHTED):
        rest = (None,) * (module.weight.dim() - 2)
        entries[prefix + "weight"] = (out_perm, in_perm, *rest)
        if hasattr(module, "weight_mask"):
            entries[prefix + "weight_mask"] = (out_perm, in_perm, *rest)
        if module.bias is not None:
            entries[prefix + "bias"] = (out_perm,)
    elif isinstance(module, _NORMS):
        for key in ("weight", "bias", "running_mean", "running_var"):
            if getattr(module, key, None) is not None:
                entries[prefix + key] = (out_perm,)
    return entries


def chain_spec(model: nn.Module, input_shape) -> PermutationSpec:
    """Spec of a network whose weighted layers run in registration order, one after another."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, _WEIGHTED + _NORMS)]
    weighted = [n for n, m in layers if isinstance(m, _WEIGHTED)]
    if len(weighted) < 2:
        raise UserError(f"{type(model).__name__} has no hidden layer to permute")
    widths = _input_widths(model, input_shape)
    axes: dict[str, tuple[Axis, ...]] = {}
    sizes: dict[str, int] = {}
    current: str | None = None
    for name, module in layers:
        if isinstance(module, _WEIGHTED):
            in_perm: Axis = None
            if current is not None:
                units = sizes[current]
                in_width = widths[name]
                if in_width % units:
                    raise UserError(f"{name} reads {in_width} inputs, not a multiple of {units} units")
                in_perm = (current, in_width // units)
            if name == weighted[-1]:
                out_perm = None
                current = None
            else:
                current = f"P_{name}"
                sizes[current] = int(module.weight.shape[0])
                out_perm = (current, 1)
            axes.update(_layer_entries(name, module, out_perm, in_perm))
        elif current is not None:
            axes.update(_layer_entries(name, module, (current, 1), None))
    return PermutationSpec(axes=axes, sizes=sizes)


def _input_widths(model: nn.Module, input_shape) -> dict[str, int]:
    """Flattened input width of every Linear (channels for convs), from one forward pass."""
    layers = dict(modules_of_type(model, _WEIGHTED))
    with FeatureTap(model, [(name, "input") for name in layers]) as tap:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            parameter = next(model.parameters())
            model(torch.zeros(2, *input_shape, device=parameter.device, dtype=parameter.dtype))
        model.train(was_training)
        widths = {point[0]: x for point, x in tap.values.items()}
    return {name: int(x.shape[-1]) if isinstance(layers[name], nn.Linear) else int(x.shape[1])
            for name, x in widths.items()}


def resnet_spec(model: nn.Module, input_shape) -> PermutationSpec:
    """Spec of a CIFAR-style ResNet: `conv1/bn1` stem, `layer<k>.<i>` blocks with conv1/bn1/conv2/bn2
    and an optional `shortcut` (or `downsample`) projection, and a final Linear.

    The residual stream of a stage is one permutation (block outputs are added to it); each block's
    inner channels get their own; a projection shortcut reads the old stream and writes a new one.
    """
    modules = dict(model.named_modules())
    axes: dict[str, tuple[Axis, ...]] = {}
    sizes: dict[str, int] = {}

    def add(name: str, out_perm: Axis, in_perm: Axis) -> None:
        axes.update(_layer_entries(name, modules[name], out_perm, in_perm))

    # The stem: the first conv and norm outside the stages (`conv0/bn0` here, `conv1/bn1` in torchvision).
    outside = [n for n, m in modules.items() if not n.startswith("layer") and isinstance(m, _WEIGHTED + _NORMS)]
    stem = next(n for n in outside if isinstance(modules[n], _WEIGHTED))
    stream = "P_stream_0"
    sizes[stream] = int(modules[stem].weight.shape[0])
    add(stem, (stream, 1), None)
    stem_norm = next((n for n in outside if isinstance(modules[n], _NORMS)), None)
    if stem_norm is not None:
        add(stem_norm, (stream, 1), None)
    blocks = sorted({n.rsplit(".conv1", 1)[0] for n in modules if n.endswith(".conv1")},
                    key=lambda n: [int(p) if p.isdigit() else p for p in n.replace("layer", "").split(".")])
    for index, block in enumerate(blocks):
        inner = f"P_{block}_inner"
        sizes[inner] = int(modules[f"{block}.conv1"].weight.shape[0])
        add(f"{block}.conv1", (inner, 1), (stream, 1))
        add(f"{block}.bn1", (inner, 1), None)
        shortcut = [n for n in modules if n.startswith(f"{block}.shortcut.") or n.startswith(f"{block}.downsample.")]
        shortcut_layers = [n for n in shortcut if isinstance(modules[n], _WEIGHTED + _NORMS)]
        new_stream = stream
        if any(isinstance(modules[n], _WEIGHTED) for n in shortcut_layers):
            new_stream = f"P_stream_{index + 1}"
            sizes[new_stream] = int(modules[f"{block}.conv2"].weight.shape[0])
            for name in shortcut_layers:
                add(name, (new_stream, 1), (stream, 1) if isinstance(modules[name], _WEIGHTED) else None)
        add(f"{block}.conv2", (new_stream, 1), (inner, 1))
        add(f"{block}.bn2", (new_stream, 1), None)
        stream = new_stream
    head = [n for n, m in modules.items() if isinstance(m, nn.Linear)][-1]
    widths = _input_widths(model, input_shape)
    add(head, None, (stream, widths[head] // sizes[stream]))
    return PermutationSpec(axes=axes, sizes=sizes)


def _is_resnet(model: nn.Module) -> bool:
    names = {n for n, _ in model.named_modules()}
    return any(n.endswith(".conv2") for n in names) and any(n.startswith("layer") for n in names)


def spec_for(model: nn.Module, input_shape, check: bool = True) -> PermutationSpec:
    """The permutation spec of a zoo model, checked to leave its outputs unchanged."""
    declared = getattr(model, "permutation_spec", None)
    if callable(declared):
        spec = declared()
    elif _is_resnet(model):
        spec = resnet_spec(model, input_shape)
    else:
        spec = chain_spec(model, input_shape)
    if check:
        _check_spec(model, spec, input_shape)
    return spec


@torch.no_grad()
def _check_spec(model: nn.Module, spec: PermutationSpec, input_shape) -> None:
    """Refuse a spec under which a random permutation changes the model's outputs."""
    import copy

    state = model.state_dict()
    missing = [k for k, v in state.items() if k not in spec.axes and v.dim() > 0 and not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(f"no permutation derived for {type(model).__name__}: {missing[0]} is not covered")
    for key, axes in spec.axes.items():
        for axis, entry in enumerate(axes):
            if entry is not None and state[key].shape[axis] != spec.sizes[entry[0]] * entry[1]:
                raise UserError(f"no valid permutation spec for {type(model).__name__}: {key} axis {axis} has "
                                f"{state[key].shape[axis]} entries, {entry[0]} has {spec.sizes[entry[0]]} units")
    generator = torch.Generator().manual_seed(1234)
    parameter = next(model.parameters())
    x = torch.randn(8, *input_shape, generator=generator).to(parameter.device, parameter.dtype)
    twin = copy.deepcopy(model)
    # Random statistics so BatchNorm layers are checked in eval mode with non-trivial values.
    for module in twin.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.running_mean.normal_(generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
    twin.eval()
    expected = twin(x)
    permuted = copy.deepcopy(twin)
    permuted.load_state_dict(apply_permutation(spec, random_permutations(spec, generator), twin.state_dict()))
    if not torch.allclose(permuted(x), expected, rtol=1e-4, atol=1e-5 * max(1.0, float(expected.abs().max()))):
        raise UserError(f"no valid permutation spec for {type(model).__name__}: permuting changes its outputs")


def state_distance(a: dict, b: dict, keys: Iterable[str] | None = None) -> float:
    """Euclidean distance between two state_dicts over `keys` (default: floating tensors)."""
    total = 0.0
    for key in keys or a:
        if a[key].is_floating_point():
            total += float((a[key].double() - b[key].double()).pow(2).sum())
    return math.sqrt(total)
