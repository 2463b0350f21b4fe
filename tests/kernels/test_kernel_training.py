"""Masked weights stay exactly zero through training, caches follow mask changes, `auto` dispatches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kernel_cases import CPU_VARIANTS
from overparam import kernels
from overparam.kernels import masked_matmul, masked_matmul_reference
from overparam.kernels.cache import mask_cache
from overparam.models.masked import MaskedLinear, apply_masks, masks_of, sparsify

BACKENDS = sorted({backend for backend, _ in CPU_VARIANTS})
OPTIMIZERS = {
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.05, nesterov=True),
    "adam_wd": lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.05),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.05),
}


def _masked_mlp(backend: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = sparsify(nn.Sequential(nn.Linear(40, 48), nn.ReLU(), nn.Linear(48, 10)))
    generator = torch.Generator().manual_seed(seed)
    apply_masks(model, {name: (torch.rand(m.shape, generator=generator) > 0.7).float()
                        for name, m in masks_of(model).items()})
    for module in model.modules():
        if isinstance(module, MaskedLinear):
            module.backend = backend
    return model


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_optimizer_steps_never_revive_masked_weights(backend, optimizer):
    model = _masked_mlp(backend)
    masks = masks_of(model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt = OPTIMIZERS[optimizer](model.parameters())
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(16, 40, generator=generator)
        y = torch.randint(0, 10, (16,), generator=generator)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for name, mask in masks.items():
            assert torch.all(model.get_parameter(name).grad[mask == 0] == 0)
        opt.step()
    for name, mask in masks.items():
        weight = model.get_parameter(name).detach()
        assert torch.all(weight[mask == 0] == 0), f"{name}: a masked weight became nonzero"
        assert not torch.equal(weight[mask != 0], before[name][mask != 0]), f"{name}: live weights did not train"


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_matches_the_reference_step_for_step(backend):
    reference, candidate = _masked_mlp("torch", seed=3), _masked_mlp(backend, seed=3)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (reference, candidate)]
    generator = torch.Generator().manual_seed(2)
    for _ in range(3):
        x, y = torch.randn(8, 40, generator=generator), torch.randint(0, 10, (8,), generator=generator)
        for model, opt in zip((reference, candidate), optimizers):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for (name, p_ref), p_new in zip(reference.named_parameters(), candidate.parameters()):
        assert torch.allclose(p_ref, p_new, atol=1e-5), name


@pytest.mark.parametrize("backend", ["sparse", "triton"])
def test_derived_mask_data_is_built_once_and_rebuilt_after_set_mask(backend):
    torch.manual_seed(0)
    layer = MaskedLinear(64, 32)
    layer.backend = backend
    layer.set_mask((torch.rand(32, 64) > 0.5).float())
    x = torch.randn(4, 64)
    layer(x)
    builds = mask_cache.builds
    for _ in range(3):
        layer(x).sum().backward()
    assert mask_cache.builds == builds, "the mask's derived data was rebuilt without a mask change"
    new_mask = (torch.rand(32, 64) > 0.9).float()
    layer.set_mask(new_mask)
    out = layer(x)
    assert mask_cache.builds > builds
    assert torch.allclose(out, masked_matmul_reference(x, layer.weight, new_mask, layer.bias), atol=1e-5)
    # load_state_dict writes into the same buffer: that is a mask change too
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    state["weight_mask"] = torch.ones(32, 64)
    layer.load_state_dict(state)
    assert torch.allclose(layer(x), masked_matmul_reference(x, layer.weight, torch.ones(32, 64), layer.bias),
                          atol=1e-5)


def test_triton_liveness_lists_live_tiles():
    from overparam.kernels.triton_kernels import build_liveness

    mask = torch.zeros(40, 70)
    mask[0, 0] = 1        # tile (0, 0)
    mask[39, 69] = 1      # tile (2, 4) with 16x16 tiles, ragged at both edges
    mask[20, 35] = 1      # tile (1, 2)
    tiles = build_liveness(mask, torch.float32, 16, 16)
    assert tiles.live.shape == (3, 5)
    assert tiles.live.nonzero().tolist() == [[0, 0], [1, 2], [2, 4]]
    assert tiles.row_count.tolist() == [1, 1, 1]
    assert tiles.row_live[:, 0].tolist() == [0, 2, 4]
    assert tiles.col_count.tolist() == [1, 0, 1, 0, 1]
    assert [tiles.col_live[k, 0].item() for k in (0, 2, 4)] == [0, 1, 2]


def test_sparse_structure_of_mask_and_transpose():
    from overparam.kernels.sparse import csr_structure

    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    structure = csr_structure(mask)
    assert structure.crow.tolist() == [0, 2, 3] and structure.cols.tolist() == [0, 2, 2]
    assert structure.flat.tolist() == [0, 2, 5]
    assert structure.crow_t.tolist() == [0, 1, 1, 3] and structure.cols_t.tolist() == [0, 0, 1]
    assert structure.flat_t.tolist() == [0, 2, 5]


def test_auto_follows_the_crossover_data(monkeypatch):
    from overparam.kernels import dispatch, sparse

    x = torch.randn(128, 784)
    weight = torch.randn(300, 784)
    implementation = sparse.default_implementation(x, weight, torch.ones(1))
    data = {"entries": [{"device": "cpu", "dtype": "float32", "implementation": implementation, "mode": "forward",
                         "batch": 128, "in_features": 784, "out_features": 300, "sparse_from": 0.7},
                        {"device": "cpu", "dtype": "float32", "implementation": implementation, "mode": "forward",
                         "batch": 256, "in_features": 4096, "out_features": 4096, "sparse_from": None}]}
    monkeypatch.setattr(dispatch, "load_crossover", lambda path=None: data)
    with torch.no_grad():
        assert dispatch.choose_backend(x, weight, (torch.rand(300, 784) > 0.5).float()) == "torch"
        assert dispatch.choose_backend(x, weight, (torch.rand(300, 784) > 0.9).float()) == "sparse"
        big = torch.randn(4096, 4096)
        assert dispatch.choose_backend(torch.randn(256, 4096), big, (torch.rand(4096, 4096) > 0.99).float()) == "torch"
        # no entry for this dtype: torch
        assert dispatch.choose_backend(x.double(), weight.double(), torch.zeros(300, 784).double()) == "torch"
        # far smaller than anything measured: torch, however sparse
        assert dispatch.choose_backend(torch.randn(2, 64), torch.randn(16, 64), torch.zeros(16, 64)) == "torch"


def test_auto_with_the_shipped_measurements_picks_sparse_only_when_sparse():
    """The crossover data in the package: dense masks go to `torch`, 95%-sparse LeNet layers to `sparse`."""
    from overparam.kernels import native
    from overparam.kernels.dispatch import choose_backend

    if native.library() is None:
        pytest.fail(f"the measurements are for the compiled CPU kernels, which did not build: {native.load_error()}")
    x = torch.randn(128, 784, requires_grad=True)
    weight = torch.randn(300, 784, requires_grad=True)
    assert choose_backend(x, weight, torch.ones(300, 784)) == "torch"
    assert choose_backend(x, weight, (torch.rand(300, 784) > 0.95).float()) == "sparse"
    with torch.no_grad():
        assert choose_backend(x, weight, torch.ones(300, 784)) == "torch"
        assert choose_backend(x, weight, (torch.rand(300, 784) > 0.95).float()) == "sparse"


def test_default_backend_drives_masked_layers(monkeypatch):
    from overparam.kernels import sparse

    calls = []
    original = sparse.masked_matmul_sparse
    monkeypatch.setattr(sparse, "masked_matmul_sparse", lambda *a, **k: calls.append(1) or original(*a, **k))
    layer = MaskedLinear(8, 4)
    kernels.set_default_backend("sparse")
    layer(torch.randn(2, 8))
    assert calls == [1]
    kernels.set_default_backend("torch")
    layer(torch.randn(2, 8))
    assert calls == [1]
    with pytest.raises(ValueError, match="unknown kernel backend"):
        kernels.set_default_backend("cuda")
    with pytest.raises(ValueError, match="unknown kernel backend"):
        masked_matmul(torch.randn(2, 8), layer.weight, layer.weight_mask, backend="fast")


def test_triton_reports_itself_unavailable_without_gpu_or_interpreter(monkeypatch):
    from overparam.errors import UserError
    from overparam.kernels import triton_kernels

    monkeypatch.setattr(triton_kernels, "INTERPRETED", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "TRITON_INTERPRET" in triton_kernels.unavailable_reason("cpu")
    assert triton_kernels.unavailable_reason("cuda") == "no CUDA device"
    assert "triton" not in kernels.available_backends("cpu")
    with pytest.raises(UserError, match="triton needs a CUDA GPU.*hardware.kernel=sparse or auto.*TRITON_INTERPRET=1"):
        kernels.set_default_backend("triton")
    with pytest.raises(UserError, match="hardware.kernel=sparse or auto"):
        kernels.set_default_backend("triton", device_type="cpu")
    with pytest.raises(RuntimeError, match="triton backend is unavailable"):
        masked_matmul(torch.randn(2, 8), torch.randn(4, 8), torch.ones(4, 8), backend="triton")
    monkeypatch.setattr(triton_kernels, "_IMPORT_ERROR", "triton cannot be imported (test)")
    assert triton_kernels.unavailable_reason("cuda").startswith("triton cannot be imported")


def test_triton_is_available_under_the_test_interpreter():
    # tests/conftest.py turns the interpreter on: the triton tests above really ran.
    assert "triton" in kernels.available_backends("cpu")


@pytest.mark.parametrize("backend", ["sparse", "triton", "auto"])
def test_cache_entries_die_with_their_mask(backend):
    import gc

    gc.collect()
    before = len(mask_cache)
    layer = MaskedLinear(48, 40)
    layer.backend = backend
    layer.set_mask((torch.rand(40, 48) > 0.5).float())
    layer(torch.randn(3, 48)).sum().backward()
    assert len(mask_cache) > before
    del layer
    gc.collect()
    assert len(mask_cache) == before


def test_runner_refuses_triton_without_a_gpu_unless_the_interpreter_is_asked_for(tmp_path):
    """No GPU and no TRITON_INTERPRET: one line pointing to sparse/auto, exit 2, no run directory."""
    import os
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: hardware.kernel=triton runs there")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "overparam.cli.main", "train", "hardware.kernel=triton",
                          "train.epochs=null", "train.steps=1", f"hydra.run.dir={run_dir}"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "hardware.kernel=sparse or auto" in lines[0] and "TRITON_INTERPRET=1" in lines[0]
    assert not run_dir.exists()
