"""What a finished run's saved weights actually score: the check behind every reported accuracy.

A summary's `test_accuracy` must be the saved model's accuracy on the test split, re-evaluated
here from the files alone (model rebuilt from the saved config, masks included).
"""

from __future__ import annotations

from pathlib import Path


def saved_accuracy(run_dir: str | Path, split: str = "test", data_dir: str | None = None) -> float:
    """Accuracy of the run's saved model on `split` (`test` or `val`), from its directory alone."""
    from overparam.data import load_dataset
    from overparam.engine.evaluate import evaluate
    from overparam.store.load import load_run_model, local_data_dir, weights_config

    run_dir = Path(run_dir)
    cfg = weights_config(run_dir)
    data = load_dataset(cfg.dataset, data_dir or local_data_dir(), seed=int(cfg.seed), device="cpu")
    model, _ = load_run_model(run_dir, data=data)
    x, y = data.splits()[split]
    return evaluate(model, x, y)["accuracy"]
