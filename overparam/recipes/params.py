"""The family-less method `dense` (the baseline), declared as every family declares its own. Torch-free."""

from __future__ import annotations

from overparam.methods import declare
from overparam.params import Spec

DENSE = declare(Spec("dense", [], doc="Train one dense model (the baseline)."), None)
