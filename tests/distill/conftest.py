"""A tiny finished run shared by the distillation tests (trained once per session, about a second)."""

from __future__ import annotations

import pytest

from tiny_runs import TINY


@pytest.fixture(scope="session")
def dense_run(tmp_path_factory):
    """(run dir, summary) of a dense tiny MLP."""
    from overparam.cli.train import train_in_process

    out = tmp_path_factory.mktemp("distill_source") / "dense"
    return out, train_in_process(TINY, out)
