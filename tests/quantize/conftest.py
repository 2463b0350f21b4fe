"""Tiny finished runs shared by the quantize tests (trained once per session, a few seconds)."""

from __future__ import annotations

import pytest

from quantize_runs import MLP


@pytest.fixture(scope="session")
def dense_run(tmp_path_factory):
    """(run dir, summary) of a dense tiny MLP."""
    from overparam.cli.train import train_in_process

    out = tmp_path_factory.mktemp("quantize_source") / "dense"
    return out, train_in_process(MLP, out)


@pytest.fixture(scope="session")
def quantize(tmp_path_factory, dense_run):
    """quantize(name, *overrides, source=dense) -> (run dir, summary) of method=quantize on a finished run."""
    from overparam.cli.train import train_in_process

    root = tmp_path_factory.mktemp("quantized")

    def _quantize(name: str, *overrides: str, source=None):
        out = root / name
        return out, train_in_process([*MLP, "method=quantize", f"from={source or dense_run[0]}", *overrides], out)

    return _quantize
