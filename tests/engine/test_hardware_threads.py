"""The thread default: allowed cores (affinity, Slurm), cores free now, one thread for tiny models."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from overparam import hardware

# The module, not the function `overparam.engine.fit` that the package exports under the same name.
fit_module = importlib.import_module("overparam.engine.fit")


def test_allowed_cores_respects_affinity_and_slurm(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert hardware.allowed_cores() == 6
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert hardware.allowed_cores() == 2
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "64")       # never more than the affinity allows
    assert hardware.allowed_cores() == 6


@pytest.mark.parametrize("free,expected", [(0.0, 1), (0.5, 1), (0.7, 1), (1.0, 1), (1.7, 2), (3.9, 4), (8.0, 4)])
def test_default_threads_counts_the_free_cores(monkeypatch, free, expected):
    monkeypatch.setattr(hardware, "allowed_cores", lambda: 4)
    monkeypatch.setattr(hardware, "free_cores", lambda: free)
    assert hardware.default_threads(None)[0] == expected
    assert hardware.default_threads(3) == (3, "hardware.threads")


def test_without_adaptive_the_load_does_not_count(monkeypatch):
    monkeypatch.setattr(hardware, "allowed_cores", lambda: 4)
    monkeypatch.setattr(hardware, "free_cores", lambda: pytest.fail("sampled the load"))
    assert hardware.default_threads(None, adaptive=False)[0] == 4


def test_unknown_load_uses_every_allowed_core(monkeypatch):
    monkeypatch.setattr(hardware, "allowed_cores", lambda: 3)
    monkeypatch.setattr(hardware, "free_cores", lambda: None)
    assert hardware.default_threads(None)[0] == 3


def test_free_cores_adds_back_this_process_time(monkeypatch):
    # Over 2 s: our cores were idle 1.0 s in all, and this process itself used 1.5 s of CPU.
    samples = iter([(12.0, 51.0, 3.5)])
    monkeypatch.setattr(hardware, "_FIRST_SAMPLE", (10.0, 50.0, 2.0))
    monkeypatch.setattr(hardware, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(hardware, "_affinity", lambda: {0, 1})
    assert hardware.free_cores() == pytest.approx(1.25)


def test_free_cores_reads_this_machine():
    free = hardware.free_cores()
    if not os.path.exists("/proc/stat"):
        assert free is None
    else:
        assert 0.0 <= free <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("runtime, expected", [
    ("gomp", {"GOMP_SPINCOUNT": str(hardware.SPIN_COUNT)}),     # bounded spin, then sleep
    (None, {"GOMP_SPINCOUNT": str(hardware.SPIN_COUNT)}),       # unknown: only libgomp reads it
    ("iomp", {"OMP_WAIT_POLICY": "PASSIVE"}),                   # not measured: passive as before
])
def test_openmp_defaults_bound_the_spin(monkeypatch, runtime, expected):
    keys = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
    for key in keys:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(hardware, "_openmp_runtime", lambda: runtime)
    hardware.openmp_defaults()
    assert {key: os.environ[key] for key in keys if key in os.environ} == expected


@pytest.mark.parametrize("chosen", [("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "0"), ("KMP_BLOCKTIME", "5")])
def test_openmp_defaults_keep_a_chosen_policy(monkeypatch, chosen):
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(*chosen)
    hardware.openmp_defaults()
    assert [key for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME") if key in os.environ] == [chosen[0]]
    assert os.environ[chosen[0]] == chosen[1]


def test_openmp_runtime_is_the_one_torch_loads():
    maps = subprocess.run([sys.executable, "-c", "import torch\nprint(open('/proc/self/maps').read())"],
                          capture_output=True, text=True, check=True).stdout
    paths = [line.split()[5] for line in maps.splitlines() if len(line.split()) >= 6]
    libraries = {path.rsplit("/", 1)[-1] for path in paths if "omp" in path.rsplit("/", 1)[-1]}
    runtime = hardware._openmp_runtime()
    assert runtime is not None and any(name.startswith(f"lib{runtime}") for name in libraries), (runtime, libraries)


def test_forward_macs_of_linear_and_conv_layers():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 10))
    assert fit_module.forward_macs(mlp, (1, 28, 28)) == 784 * 300 + 300 * 10
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 32 * 32, 10))
    assert fit_module.forward_macs(conv, (3, 32, 32)) == 8 * 3 * 9 * 32 * 32 + 8 * 32 * 32 * 10


def test_tiny_models_train_on_one_thread():
    assert hardware.threads_for_model(4, 266_000 * 60) == 1       # LeNet-300-100 at batch 60
    assert hardware.threads_for_model(4, 2_000_000_000) == 4


def test_setup_hardware_applies_the_default_once(monkeypatch):
    saved = torch.get_num_threads()
    monkeypatch.setattr(fit_module, "_chosen_threads", None)
    asked = []
    monkeypatch.setattr(hardware, "default_threads", lambda explicit, adaptive: asked.append(adaptive) or (1, "test"))
    try:
        fit_module.setup_hardware({"device": "cpu", "threads": None, "deterministic": True})
        assert torch.get_num_threads() == 1 and fit_module._chosen_threads == 1
        # bit-identical reruns (the CPU default) leave the load out of the count
        assert asked == [False]
        monkeypatch.setattr(fit_module, "_chosen_threads", None)
        fit_module.setup_hardware({"device": "cpu", "threads": None, "deterministic": False})
        assert asked == [False, True]
        fit_module.setup_hardware({"device": "cpu", "threads": 2})
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)
