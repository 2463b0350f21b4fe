"""`method=oneshot`: train dense, prune to `sparsity` by magnitude in one step, then rewind or retrain.

The same machinery as IMP with two levels: level 0 (dense, shared by a sparsity sweep through the
level cache) and level 1 at exactly the target.
"""

from __future__ import annotations


def run(params, context) -> dict:
    """Dense training (level 0), one magnitude pruning to the target, training of the pruned net (level 1)."""
    from overparam.recipes.shared.lottery import run_lottery

    return run_lottery(params, context, oneshot=True)
