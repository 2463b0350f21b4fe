"""`method=oneshot`: train dense, prune to `sparsity` by magnitude in one step, then rewind or retrain.

The same machinery as IMP with two levels: level 0 (dense, shared by a sparsity sweep through the
level cache) and level 1 at exactly the target.
"""

from __future__ import annotations

from overparam.recipes.prune import common


def validate(cfg: dict) -> None:
    """oneshot's keys: scope, output_rate, rewind syntax, retraining schedule."""
    from overparam.checks import number

    common.validate_prune_block(cfg, rate=False)
    number(cfg, "prune.output_rate", low=0.0, high=1.0, optional=True)
    common.validate_rewind(cfg)


def run(cfg, run) -> dict:
    """Dense training (level 0), one magnitude pruning to the target, training of the pruned net (level 1)."""
    from overparam.recipes.prune.imp import run_lottery

    return run_lottery(cfg, run, oneshot=True)
