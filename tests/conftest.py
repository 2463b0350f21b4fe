"""Test-wide settings: these must run before any test imports the kernels or generates data."""

import os
import tempfile

# Triton kernels run on the CPU through the interpreter; it must be set before triton is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
# mnist1d is generated once and cached; tests share one cache folder (CI sets its own).
os.environ.setdefault("OVERPARAM_DATA_DIR", os.path.join(tempfile.gettempdir(), "overparam-test-data"))
os.environ.setdefault("MPLBACKEND", "Agg")
