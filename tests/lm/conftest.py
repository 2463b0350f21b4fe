"""Model tests run tiny tensors: one intra-op thread is faster than several fighting for shared cores."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Every test here runs with the shared `single_thread` fixture."""
    yield
