"""Test-wide settings: these must run before any test imports the kernels or generates data."""

import os
import tempfile

# Triton kernels run on the CPU through the interpreter; it must be set before triton is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
# mnist1d is generated once and cached; tests share one cache folder (CI sets its own).
os.environ.setdefault("OVERPARAM_DATA_DIR", os.path.join(tempfile.gettempdir(), "overparam-test-data"))
os.environ.setdefault("MPLBACKEND", "Agg")
# `auto` would measure this machine at first use and keep the result in the user's cache: tests decide
# from the shipped measurements only (deterministic), and anything cached goes to a temporary folder.
os.environ.setdefault("OVERPARAM_CALIBRATE", "0")
os.environ.setdefault("OVERPARAM_CACHE_DIR", os.path.join(tempfile.gettempdir(), "overparam-test-cache"))


import pytest  # noqa: E402  (after the environment settings above, on purpose)


@pytest.fixture
def single_thread():
    """Tiny tensors: one intra-op thread is faster than several fighting for shared cores.

    Folders of such tests switch it on with an autouse fixture in their conftest.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
