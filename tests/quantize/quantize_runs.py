"""The tiny run settings of the quantize tests: a module of its own name, since `from conftest import` takes
whichever folder's conftest.py was imported first."""

from __future__ import annotations

from tiny_runs import tiny

# A two-hidden-layer MLP on mnist1d: two quantizable layers besides the output layer.
MLP = tiny(150, "model.widths=[32,16]", "hardware.threads=1", width=None)
