"""Kernel tests change the process-wide default backend; put it back after each test."""

import pytest


@pytest.fixture(autouse=True)
def _restore_default_backend():
    from overparam import kernels

    saved = kernels.get_default_backend()
    yield
    kernels._default_backend = saved
