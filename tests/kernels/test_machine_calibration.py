"""`auto` on an unseen machine: brief measurement at first use, cached per machine, listed by `runner ls hardware`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from overparam import hardware
from overparam.kernels import calibrate, dispatch


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OVERPARAM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("OVERPARAM_CALIBRATE", "1")
    calibrate._machine_crossover.cache_clear()
    yield tmp_path
    calibrate._machine_crossover.cache_clear()


def test_crossover_interpolates_the_first_lasting_win():
    assert calibrate.crossover([(0.5, 2.0), (0.8, 1.5), (0.9, 0.5), (0.95, 0.3)]) == pytest.approx(
        0.8 + 0.1 * 0.369, abs=1e-3)
    assert calibrate.crossover([(0.5, 0.9), (0.8, 0.7)]) == 0.5
    assert calibrate.crossover([(0.5, 0.9), (0.8, 1.1)]) is None      # a win that does not last is no win
    assert calibrate.crossover([(0.5, 3.0), (0.9, 1.2)]) is None


def test_first_use_measures_once_and_later_processes_read_the_file(cache, monkeypatch):
    measured = []
    fake = {"version": hardware.CALIBRATION_VERSION, "measured_on": {"threads": 1}, "entries": [
        {"op": "linear", "device": "cpu", "dtype": "float32", "implementation": "native", "mode": "train",
         "shape": "lenet", "batch": 128, "in_features": 784, "out_features": 300, "sparse_from": 0.42}]}
    monkeypatch.setattr(calibrate, "measure", lambda: measured.append(1) or fake)
    first = calibrate.machine_crossover()
    assert measured == [1] and first["entries"] == fake["entries"]
    path = hardware.calibration_path("cpu", torch.get_num_threads())
    assert path.parent == cache / "hardware" and json.loads(path.read_text())["entries"] == fake["entries"]
    calibrate._machine_crossover.cache_clear()          # a new process: reads, does not measure
    assert calibrate.machine_crossover()["entries"] == fake["entries"] and measured == [1]
    # the machine's number wins over the shipped one for that shape; shipped shapes it lacks stay
    data = dispatch.crossover_data("cpu")
    assert dispatch.sparse_threshold("cpu", torch.float32, "native", "train", 128, 784, 300, data=data) == 0.42
    assert any(e["shape"] == "square4096" for e in data["entries"])


def test_calibration_off_uses_the_shipped_file(cache, monkeypatch):
    monkeypatch.setenv("OVERPARAM_CALIBRATE", "0")
    monkeypatch.setattr(calibrate, "measure", lambda: pytest.fail("measured although OVERPARAM_CALIBRATE=0"))
    assert calibrate.machine_crossover() is None
    assert dispatch.crossover_data("cpu") == dispatch.load_crossover()


def test_the_real_measurement_is_well_formed(cache, single_thread, monkeypatch):
    monkeypatch.setattr(calibrate, "BUDGET_SECONDS", 0.0)   # the first shape only: a busy machine's case
    data = calibrate.measure()
    assert [(e["shape"], e["mode"]) for e in data["entries"]] == [("lenet", "train"), ("lenet", "forward")]
    assert data["measured_on"]["threads"] == 1
    for entry in data["entries"]:
        assert set(entry["sparse_over_torch"]) == {str(s) for s in calibrate.SPARSITIES}
        assert entry["sparse_from"] is None or 0.5 <= entry["sparse_from"] <= 0.98


def test_machine_key_separates_thread_counts_and_devices():
    assert hardware.machine_key("cpu", 1) != hardware.machine_key("cpu", 2)
    assert hardware.machine_key("cpu", 1) != hardware.machine_key("cuda", 1)
    assert hardware.machine_key("cpu", 2) == hardware.machine_key("cpu", 2)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("OVERPARAM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hardware.cache_dir() == tmp_path / "xdg" / "overparam"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hardware.cache_dir() == tmp_path / "home" / ".cache" / "overparam"


def test_runner_ls_hardware_shows_the_measurements_without_torch(cache):
    path = hardware.calibration_path("cpu", 1)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": hardware.CALIBRATION_VERSION,
                                "measured_on": {"cpu": "Test CPU", "threads": 1, "torch": "9.9", "seconds": 1.2},
                                "entries": [{"op": "conv", "mode": "train", "shape": "conv64_16x16", "batch": 4096,
                                             "device": "cpu", "dtype": "float32", "implementation": "native",
                                             "in_features": 576, "out_features": 64, "sparse_from": 0.87}]}))
    code = ("import sys; from overparam.cli.ls import main; main(['hardware']); "
            "print('torch imported' if 'torch' in sys.modules else 'no torch')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "no torch" in out.stdout
    assert str(path) in out.stdout and "Test CPU, 1 threads" in out.stdout
    assert "conv   train conv64_16x16   4096x576->64       0.87" in out.stdout
    assert "default threads here:" in out.stdout and "hardware.deterministic=false" in out.stdout
    assert f"this machine: {hardware.cpu_model()}" in out.stdout
    assert f"{hardware.allowed_cores()} of {os.cpu_count()} cores allowed" in out.stdout


def test_cpu_flags_are_read_from_cpuinfo(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test Xeon\ncpu family\t: 6\nmodel\t\t: 143\n"
                       "flags\t\t: fpu sse avx2 avx avx512f fma amx_tile avx512_vnni\n")
    real_path = hardware.Path
    monkeypatch.setattr(hardware, "Path", lambda name: cpuinfo if name == "/proc/cpuinfo" else real_path(name))
    assert hardware.cpu_flags() == ["avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile"]
    line = hardware.describe_cpu()
    assert line.startswith("Test Xeon (family 6 model 143), ")
    assert line.endswith(": avx avx2 fma avx512f avx512_vnni amx_tile")
    cpuinfo.write_text("processor\t: 0\n")
    assert hardware.cpu_flags() == [] and hardware.describe_cpu().endswith(": flags unknown")
