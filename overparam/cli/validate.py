"""Checks of a composed config before anything runs: one clear line for each bad value."""

from __future__ import annotations

from overparam.checks import choice, get, number  # noqa: F401  (re-exported)
from overparam.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "linear")
PRECISIONS = ("fp32", "bf16", "fp16")
KERNELS = ("auto", "torch", "triton", "sparse")


def validate(cfg: dict, trust: bool | None = None) -> None:
    """Validate the keys every run uses, then the method's own keys (its module's `validate`)."""
    number(cfg, "seed", integer=True, low=0)
    number(cfg, "sparsity", low=0.0, high=1.0, high_open=True)
    train = get(cfg, "train") or {}
    if (train.get("steps") is None) == (train.get("epochs") is None):
        raise UserError("set exactly one of train.steps and train.epochs (the other to null)")
    number(cfg, "train.steps", low=0, low_open=True, integer=True, optional=True)
    number(cfg, "train.epochs", low=0, low_open=True, optional=True)
    number(cfg, "train.batch_size", low=1, integer=True)
    number(cfg, "train.eval_every", low=1, integer=True, optional=True)
    number(cfg, "train.eval_every_epochs", low=0, low_open=True, optional=True)
    number(cfg, "train.checkpoint_every", low=1, integer=True, optional=True)
    number(cfg, "train.checkpoint_seconds", low=0.0, optional=True)
    number(cfg, "train.snapshot_every", low=1, integer=True, optional=True)
    number(cfg, "train.grad_clip", low=0, low_open=True, optional=True)
    choice(cfg, "optim.name", OPTIMIZERS)
    number(cfg, "optim.lr", low=0.0)
    number(cfg, "optim.weight_decay", low=0.0)
    number(cfg, "optim.momentum", low=0.0, high=1.0, high_open=True)
    number(cfg, "optim.warmup_steps", low=0, integer=True)
    choice(cfg, "optim.schedule", SCHEDULES)
    number(cfg, "dataset.val_fraction", low=0.0, high=1.0, high_open=True, optional=True)
    number(cfg, "dataset.label_noise", low=0.0, high=1.0, optional=True)
    number(cfg, "dataset.label_noise_seed", low=0, integer=True, optional=True)
    number(cfg, "dataset.split_seed", low=0, integer=True, optional=True)
    dataset = get(cfg, "dataset") or {}
    if isinstance(dataset, dict) and dataset.get("name") == "mnist1d":
        from overparam.data.mnist1d_settings import STANDARD, generator_args

        # A bad variant or generator setting ends here, before a run directory is written.
        generator_args(dataset.get("variant"), **{k: v for k, v in dataset.items() if k in STANDARD})
    choice(cfg, "hardware.precision", PRECISIONS)
    choice(cfg, "hardware.kernel", KERNELS)
    number(cfg, "hardware.threads", low=1, integer=True, optional=True)
    method = get(cfg, "method") or {}
    if not isinstance(method, dict) or not (method.get("_target_") or method.get("name")):
        raise UserError("method is missing: the method config must name its recipe")
    import sys

    from overparam.components import resolve

    recipe = resolve("method", method, trust=trust)
    module = sys.modules.get(getattr(recipe, "__module__", ""), None)
    from overparam.store.load import RUN_KEYS, check_run_ref

    for key in RUN_KEYS:
        value = get(cfg, key)
        if value not in (None, ""):
            check_run_ref(value, key, trust=trust)
    method_validate = getattr(module, "validate", None)
    if method_validate is not None:
        method_validate(cfg)
