"""Training loop, evaluation, optimizers and schedules."""

from overparam.engine.evaluate import evaluate, evaluate_splits
from overparam.engine.fit import FitResult, fit, setup_hardware
from overparam.engine.optim import build_optimizer, lr_at, total_steps

__all__ = ["FitResult", "build_optimizer", "evaluate", "evaluate_splits", "fit", "lr_at", "setup_hardware", "total_steps"]
