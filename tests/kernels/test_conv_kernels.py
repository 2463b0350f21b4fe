"""The sparse convolution equals the reference, forward and backward, with exact zeros at masked weights."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from overparam import kernels
from overparam.kernels.conv import masked_conv, masked_conv_reference, masked_conv_sparse

IMPLEMENTATIONS = ("native", "torch_sparse")


def _operands(batch, cin, cout, size, kernel, conv1d, sparsity, seed, dtype=torch.float32, pattern="random"):
    generator = torch.Generator().manual_seed(seed)
    spatial = (size,) if conv1d else (size, size + 1)     # non-square images catch swapped axes
    taps = (kernel,) if conv1d else (kernel, kernel)
    x = torch.randn(batch, cin, *spatial, generator=generator, dtype=torch.float64)
    # Weights are NOT zero at masked positions: the sparse path must ignore them.
    weight = torch.randn(cout, cin, *taps, generator=generator, dtype=torch.float64)
    bias = torch.randn(cout, generator=generator, dtype=torch.float64)
    if pattern == "all_zero":
        mask = torch.zeros_like(weight)
    elif pattern == "all_one":
        mask = torch.ones_like(weight)
    else:
        mask = (torch.rand(weight.shape, generator=generator, dtype=torch.float64) >= sparsity).double()
    return x.to(dtype), weight.to(dtype), mask.to(dtype), bias.to(dtype)


def _forward_backward(fn, x, weight, bias, seed=0):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (x, weight, bias)]
    out = fn(*leaves)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(out.dtype)
    out.backward(grad)
    return (out.detach(), *(t.grad if t is not None else None for t in leaves))


def assert_conv_matches_reference(implementation, x, weight, mask, bias, stride, padding, dilation, tolerance=1e-4):
    got = _forward_backward(lambda a, w, b: masked_conv_sparse(a, w, mask, b, stride, padding, dilation,
                                                               implementation=implementation), x, weight, bias)
    want = _forward_backward(lambda a, w, b: masked_conv_reference(a, w, mask.double(), b, stride, padding, dilation),
                             x.double(), weight.double(), None if bias is None else bias.double())
    for name, g, w in zip(("output", "grad_x", "grad_weight", "grad_bias"), got, want):
        if w is None:
            assert g is None, name
            continue
        assert g.shape == w.shape and g.dtype == x.dtype, name
        scale = max(1.0, float(w.abs().max())) if w.numel() else 1.0
        error = float((g.double() - w).abs().max()) if g.numel() else 0.0
        assert error <= tolerance * scale, (name, error)
    assert torch.all(got[2][mask == 0] == 0), "masked weight gradient is not exactly zero"


conv_cases = dict(batch=st.integers(1, 3), cin=st.integers(1, 5), cout=st.integers(1, 6), size=st.integers(3, 11),
                  kernel=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 2),
                  dilation=st.integers(1, 2), conv1d=st.booleans(), sparsity=st.floats(0.0, 0.99),
                  pattern=st.sampled_from(("random", "random", "all_zero", "all_one")), bias=st.booleans(),
                  seed=st.integers(0, 2**16))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@settings(max_examples=40, deadline=None)
@given(**conv_cases)
def test_sparse_conv_matches_reference(implementation, batch, cin, cout, size, kernel, stride, padding, dilation,
                                       conv1d, sparsity, pattern, bias, seed):
    if size + 2 * padding < dilation * (kernel - 1) + 1:
        size = dilation * (kernel - 1) + 1        # at least one output position
    x, weight, mask, b = _operands(batch, cin, cout, size, kernel, conv1d, sparsity, seed, pattern=pattern)
    assert_conv_matches_reference(implementation, x, weight, mask, b if bias else None, stride, padding, dilation)


# Fixed cases: the layer shapes the benchmarks time (small batch), wide rows that take the 16-wide
# vector path, 8-wide rows, strided downsampling, and dilation.
FIXED = [
    (2, 3, 16, 32, 3, 1, 1, 1, 0.9),     # resnet20 stem, 32 wide: two 16-wide pieces per row
    (2, 16, 32, 16, 3, 2, 1, 1, 0.5),    # resnet20 downsampling
    (3, 8, 8, 8, 3, 1, 1, 1, 0.95),      # 8-wide rows
    (2, 4, 6, 21, 3, 1, 2, 2, 0.7),      # dilation, ragged widths
    (2, 32, 16, 8, 1, 1, 0, 1, 0.8),     # 1x1 projection
]


@pytest.mark.parametrize("batch,cin,cout,size,kernel,stride,padding,dilation,sparsity", FIXED)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fixed_conv_cases_match_reference(implementation, batch, cin, cout, size, kernel, stride, padding, dilation,
                                          sparsity):
    x, weight, mask, bias = _operands(batch, cin, cout, size, kernel, False, sparsity, 3)
    assert_conv_matches_reference(implementation, x, weight, mask, bias, stride, padding, dilation)


def test_sparse_conv_gradcheck_float64():
    x, weight, mask, bias = _operands(2, 3, 4, 6, 3, False, 0.5, 1, dtype=torch.float64)
    # gradcheck perturbs masked weights too: their numerical gradient is zero, as ours must be.
    assert torch.autograd.gradcheck(
        lambda a, w, b: masked_conv_sparse(a, w, mask, b, 2, 1, 1, implementation="torch_sparse"),
        tuple(t.requires_grad_(True) for t in (x, weight, bias)))


def test_masked_conv_weights_are_never_read():
    """NaN in every masked weight never reaches the output or the input gradient."""
    x, weight, mask, bias = _operands(2, 6, 8, 10, 3, False, 0.7, 5)
    poisoned = torch.where(mask == 0, torch.full_like(weight, float("nan")), weight)
    out, grad_x, grad_w, _ = _forward_backward(
        lambda a, w, b: masked_conv_sparse(a, w, mask, b, 1, 1, 1, implementation="native"), x, poisoned, bias)
    want = _forward_backward(lambda a, w, b: masked_conv_reference(a, w, mask, b, 1, 1, 1), x, weight, bias)
    assert torch.isfinite(out).all() and torch.isfinite(grad_x).all()
    assert torch.allclose(out, want[0], atol=1e-4) and torch.allclose(grad_x, want[1], atol=1e-4)
    assert torch.equal(grad_w[mask == 0], torch.zeros(int((mask == 0).sum())))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sparse_conv_half_precision_on_cpu_computes_in_float32(dtype):
    x, weight, mask, bias = _operands(2, 4, 6, 9, 3, False, 0.6, 2, dtype=dtype)
    out = masked_conv_sparse(x, weight, mask, bias, 1, 1, 1)
    want = masked_conv_reference(x.float(), weight.float(), mask.float(), bias.float(), 1, 1, 1)
    assert out.dtype == dtype
    assert torch.allclose(out.float(), want, atol=0.05, rtol=0.02)


def test_unbatched_input():
    x, weight, mask, bias = _operands(1, 3, 5, 8, 3, False, 0.5, 4)
    out = masked_conv(x[0], weight, mask, bias, 1, 1, backend="sparse")
    assert out.shape == (5, 8, 9)
    assert torch.allclose(out, masked_conv_reference(x[0], weight, mask, bias, 1, 1), atol=1e-5)


def test_masked_conv_layers_train_the_same_on_every_backend():
    """MaskedConv1d/2d (zeros and reflect padding, groups) through `sparse` equal `torch`, gradients included."""
    from torch import nn

    from overparam.models.masked import apply_masks, masks_of, sparsify

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, stride=2, groups=2), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1),
                        nn.Flatten(1, 2), nn.Conv1d(6 * 3, 4, 2))
    sparsify(net)
    generator = torch.Generator().manual_seed(1)
    apply_masks(net, {k: (torch.rand(m.shape, generator=generator) > 0.6).float() for k, m in masks_of(net).items()})
    x = torch.randn(2, 3, 8, 7)
    results = {}
    for backend in ("torch", "sparse"):
        kernels.set_default_backend(backend)
        net.zero_grad(set_to_none=True)
        out = net(x)
        out.square().sum().backward()
        results[backend] = (out.detach(), [p.grad.clone() for p in net.parameters()])
    assert torch.allclose(results["torch"][0], results["sparse"][0], atol=1e-5)
    for a, b in zip(results["torch"][1], results["sparse"][1]):
        assert torch.allclose(a, b, atol=1e-4)
    for layer in (net[0], net[4], net[6]):
        assert torch.all(layer.weight.grad[layer.weight_mask == 0] == 0)


def test_auto_follows_the_conv_crossover_data(monkeypatch):
    from overparam.kernels import dispatch

    entry = {"op": "conv", "device": "cpu", "dtype": "float32", "implementation": "native", "mode": "train",
             "shape": "c", "batch": 8 * 16 * 16, "in_features": 16 * 9, "out_features": 16, "sparse_from": 0.8}
    monkeypatch.setattr(dispatch, "load_crossover", lambda path=None: {"entries": [entry]})
    x = torch.randn(8, 16, 16, 16)
    weight = torch.randn(16, 16, 3, 3, requires_grad=True)
    generator = torch.Generator().manual_seed(0)
    sparse_mask = (torch.rand(weight.shape, generator=generator) > 0.9).float()
    dense_mask = (torch.rand(weight.shape, generator=generator) > 0.5).float()
    assert dispatch.choose_conv_backend(x, weight, sparse_mask, 1, 1, 1, 1) == "sparse"
    assert dispatch.choose_conv_backend(x, weight, dense_mask, 1, 1, 1, 1) == "torch"
    # no forward entry, grouped convolutions and 'same' padding: the reference
    with torch.no_grad():
        assert dispatch.choose_conv_backend(x, weight, sparse_mask, 1, 1, 1, 1) == "torch"
    grouped = torch.randn(16, 8, 3, 3, requires_grad=True)
    assert dispatch.choose_conv_backend(x, grouped, torch.zeros(16, 8, 3, 3), 1, 1, 1, 2) == "torch"
    assert dispatch.choose_conv_backend(x, weight, sparse_mask, 1, "same", 1, 1) == "torch"
    # the linear entries are not used for convolutions, nor the conv entries for linear layers
    assert dispatch.sparse_threshold("cpu", torch.float32, "native", "train", 2048, 144, 16) is None


def test_shipped_crossover_has_conv_entries_for_the_benchmarked_layers():
    from overparam.kernels.dispatch import load_crossover

    conv = [e for e in load_crossover()["entries"] if e.get("op") == "conv"]
    assert {e["shape"] for e in conv} >= {"conv4.conv2", "resnet20.s1"}
    assert all(e["sparse_from"] is None or 0.0 < e["sparse_from"] < 1.0 for e in conv)
