"""`method=imp`: iterative magnitude pruning with rewinding, and the lottery-ticket controls.

Frankle & Carbin 2019 (rewind=init), Frankle et al. 2020 (late rewinding, `<N>it`/`<N>ep`), and
prune-then-retrain (rewind=none, with the `ft`/`lrw`/`clr` retraining schedules of Renda et al.
2020 and Le & Hua 2021). Level L keeps round(N * (1 - rate)^L) of the N prunable weights; the
last level prunes exactly to `sparsity`. Levels are therefore a prefix sequence independent of the
target, and a sparsity sweep shares them through a level cache (`store.levels.LevelCache`) keyed by the
config without `sparsity`.

Each level trains through `engine.fit` with `tag=level_<L>` (so it resumes on its own) and is
stored as `<run>/level_<L>/` (model.safetensors with masks, mask.safetensors, metrics.jsonl,
summary.json). A complete level is never recomputed.

Controls (`control=`) are run on the same levels: the ticket lineage is produced (or taken from
the cache) inside `<run>/ticket/`, and each level of the control run trains the control network:
- `random_reinit`: the ticket's mask, a fresh initialization;
- `random_mask`: the ticket's per-layer counts at random positions, the ticket's starting weights;
- `random_prune`: random positions with `prune.distribution` layer densities (uniform or ERK) at the
  level's sparsity, the ticket's starting weights (Liu et al. 2022's random pruning, per level).
"""

from __future__ import annotations

from overparam.recipes.shared.lottery import run_lottery


def run(params, context) -> dict:
    """Iterative magnitude pruning to `sparsity` at `prune.rate` per round; every level in `<run>/level_<L>/`."""
    return run_lottery(params, context, oneshot=False)
