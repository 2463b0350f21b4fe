"""Every backend equals the reference, forward and backward, with exact zeros at masked weights."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel_cases import CPU_VARIANTS, assert_matches_reference, make_mask
from overparam.kernels import masked_matmul_reference
from overparam.kernels.triton_kernels import tile_shape

PATTERNS = ("all_zero", "all_one", "random", "two_four", "zero_tiles")
TRITON_TILE = tile_shape("cpu")[1:]


def _operands(batch, in_features, out_features, pattern, sparsity, seed, three_d=False, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    leading = (2, batch) if three_d else (batch,)
    x = torch.randn(*leading, in_features, generator=generator)
    # Weights are NOT zero at masked positions: the backends must ignore them.
    weight = torch.randn(out_features, in_features, generator=generator)
    bias = torch.randn(out_features, generator=generator)
    mask = make_mask(out_features, in_features, pattern, sparsity, generator, tile=TRITON_TILE)
    return x.to(dtype), weight.to(dtype), mask.to(dtype), bias.to(dtype)


shapes = dict(batch=st.integers(1, 9), in_features=st.integers(1, 96), out_features=st.integers(1, 64),
              pattern=st.sampled_from(PATTERNS), sparsity=st.floats(0.0, 0.99), seed=st.integers(0, 2**16),
              three_d=st.booleans(), bias=st.booleans())


@pytest.mark.parametrize("backend,implementation", [v for v in CPU_VARIANTS if v[0] != "triton"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**shapes)
def test_fast_backends_match_reference(backend, implementation, batch, in_features, out_features, pattern, sparsity,
                                       seed, three_d, bias):
    x, weight, mask, b = _operands(batch, in_features, out_features, pattern, sparsity, seed, three_d)
    assert_matches_reference(backend, implementation, x, weight, mask, b if bias else None)


@settings(max_examples=20, deadline=None)
@given(**shapes)
def test_triton_matches_reference(batch, in_features, out_features, pattern, sparsity, seed, three_d, bias):
    x, weight, mask, b = _operands(batch, in_features, out_features, pattern, sparsity, seed, three_d)
    assert_matches_reference("triton", None, x, weight, mask, b if bias else None)


# Fixed cases: tile multiples and not, batch of 1, 3-D input, every mask pattern.
FIXED = [
    (1, 64, 64, "random", 0.5, False),       # batch of 1, exact tile multiples
    (5, 96, 64, "zero_tiles", 0.3, True),    # whole dead tiles, 3-D input
    (7, 70, 45, "zero_tiles", 0.0, False),   # dead tiles with ragged edges
    (3, 33, 17, "all_zero", 0.0, False),
    (4, 50, 40, "all_one", 0.0, True),
    (6, 64, 32, "two_four", 0.5, False),
    (9, 96, 64, "random", 0.99, False),
]


@pytest.mark.parametrize("batch,in_features,out_features,pattern,sparsity,three_d", FIXED)
@pytest.mark.parametrize("backend,implementation", CPU_VARIANTS)
def test_fixed_cases_match_reference(backend, implementation, batch, in_features, out_features, pattern, sparsity,
                                     three_d):
    x, weight, mask, bias = _operands(batch, in_features, out_features, pattern, sparsity, 7, three_d)
    assert_matches_reference(backend, implementation, x, weight, mask, bias)


@pytest.mark.parametrize("pattern", ["random", "zero_tiles"])
def test_triton_float16_matches_reference(pattern):
    x, weight, mask, bias = _operands(8, 64, 48, pattern, 0.6, 3, dtype=torch.float16)
    assert_matches_reference("triton", None, x, weight, mask, bias, dtype=torch.float16)


def test_sparse_float64_through_torch_sparse():
    x, weight, mask, bias = _operands(5, 40, 30, "random", 0.7, 1, dtype=torch.float64)
    assert_matches_reference("sparse", "torch_sparse", x, weight, mask, bias, dtype=torch.float64)


def test_reference_gradcheck_float64():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(5, 7, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, generator=generator, requires_grad=True)
    mask = (torch.rand(5, 7, generator=generator) > 0.5).double()
    assert torch.autograd.gradcheck(lambda a, w, b: masked_matmul_reference(a, w, mask, b), (x, weight, bias))


def test_reference_is_x_times_masked_weight_transposed():
    x = torch.tensor([[1.0, 2.0, 3.0]])
    weight = torch.tensor([[1.0, 10.0, 100.0], [2.0, 20.0, 200.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = masked_matmul_reference(x, weight, mask, torch.tensor([0.5, -0.5]))
    assert out.tolist() == [[1.0 + 300.0 + 0.5, 40.0 - 0.5]]


@pytest.mark.parametrize("backend,implementation", [("sparse", "native"), ("sparse", "torch_sparse"),
                                                    ("triton", None)])
def test_masked_weights_are_never_read(backend, implementation):
    """NaN in every masked weight (whole dead tiles included) never reaches output or gradients."""
    from kernel_cases import forward_backward, run_backend

    x, weight, mask, bias = _operands(6, 96, 64, "zero_tiles", 0.5, 11)
    poisoned = torch.where(mask == 0, torch.full_like(weight, float("nan")), weight)
    grad = torch.randn(6, 64)
    out, grad_x, grad_w, _ = forward_backward(lambda a, w, b: run_backend(backend, implementation, a, w, mask, b),
                                              x, poisoned, bias, grad)
    want = forward_backward(lambda a, w, b: masked_matmul_reference(a, w, mask, b), x, weight, bias, grad)
    assert torch.isfinite(out).all() and torch.isfinite(grad_x).all()
    assert torch.allclose(out, want[0], atol=1e-4) and torch.allclose(grad_x, want[1], atol=1e-4)
    assert torch.equal(grad_w[mask == 0], torch.zeros(int((mask == 0).sum())))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sparse_half_precision_on_cpu_computes_in_float32(dtype):
    x, weight, mask, bias = _operands(6, 48, 32, "random", 0.8, 5, dtype=dtype)
    assert_matches_reference("sparse", None, x, weight, mask, bias, dtype=dtype)


# bfloat16 tl.dot is wrong under the triton interpreter (a known interpreter limit): float16 there.
@pytest.mark.parametrize("backend,dtype", [("sparse", torch.bfloat16), ("triton", torch.float16)])
def test_backends_run_under_cpu_autocast(backend, dtype):
    from overparam.kernels import masked_matmul

    x, weight, mask, bias = _operands(4, 64, 32, "random", 0.7, 9)
    weight.requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        out = masked_matmul(x, weight, mask, bias, backend=backend)
        want = masked_matmul_reference(x, weight, mask, bias)
    assert out.dtype == want.dtype == dtype
    assert torch.allclose(out.float(), want.float(), atol=0.15, rtol=0.02)
    out.float().sum().backward()
    assert weight.grad.dtype == torch.float32 and torch.all(weight.grad[mask == 0] == 0)


def test_csr_autograd_gradcheck_float64():
    from overparam.kernels.sparse import masked_matmul_sparse

    generator = torch.Generator().manual_seed(4)
    x = torch.randn(3, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(4, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, generator=generator, requires_grad=True)
    mask = (torch.rand(4, 6, generator=generator) > 0.4).double()
    # gradcheck perturbs masked weights too: their numerical gradient is zero, as ours must be.
    assert torch.autograd.gradcheck(
        lambda a, w, b: masked_matmul_sparse(a, w, mask, b, implementation="torch_sparse"), (x, weight, bias))


def test_two_four_detection():
    from overparam.kernels.sparse import default_implementation, is_two_four

    assert is_two_four(torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]]))
    assert not is_two_four(torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]]))
    assert not is_two_four(torch.ones(2, 6))  # rows not made of whole groups of four
    # on a CPU the 2:4 path never applies (it needs a CUDA GPU of compute capability >= 8.0)
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0] * 16] * 64)
    assert default_implementation(torch.randn(2, 64), torch.randn(64, 64), mask) in ("native", "torch_sparse")
