"""Every method's parameter declaration, by method name, and the keys every run shares (`SHARED`).

Each method's Spec is declared with the method itself (`overparam.methods.declare`, in the torch-free
`overparam/recipes/<family>/params.py`): `runner ls method imp` and `cli/validate.py` read them without
loading a recipe.
"""

from __future__ import annotations

from overparam.errors import UserError
from overparam.params import Param, Params, Spec

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "linear")
PRECISIONS = ("fp32", "bf16", "fp16")
KERNELS = ("auto", "torch", "triton", "sparse")


def _steps_or_epochs(params: Params, cfg: dict) -> None:
    if (params["train.steps"] is None) == (params["train.epochs"] is None):
        raise UserError("set exactly one of train.steps and train.epochs (the other to null)")


def _mnist1d_settings(params: Params, cfg: dict) -> None:
    dataset = cfg.get("dataset") or {}
    if isinstance(dataset, dict) and dataset.get("name") == "mnist1d":
        from overparam.data.mnist1d_settings import STANDARD, augment_settings, generator_args

        # A bad variant, generator setting or augmentation ends here, before a run directory is written.
        generator_args(dataset.get("variant"), **{k: v for k, v in dataset.items() if k in STANDARD})
        augment_settings(dataset.get("augment"))


def _milestones(params: Params, cfg: dict) -> None:
    milestones = params["optim.milestones"] or ()
    if any(later <= earlier for earlier, later in zip(milestones, milestones[1:])):
        raise UserError(f"optim.milestones={list(milestones)} must increase (fractions of training, in (0, 1])")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _fraction(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1


# Seeds go to torch and numpy, which take at most a signed 64-bit integer.
MAX_SEED = 2**63 - 1


def _n(key: str, kind: str = "float", **kwargs) -> Param:
    return Param(key, kind, None, **kwargs)


# The keys of every run (configs/train.yaml and its groups); their defaults live in those groups' files.
SHARED = Spec("shared", [
    _n("seed", "int", low=0, high=MAX_SEED, doc="seed of the initialization and the data order"),
    _n("sparsity", low=0.0, high=1.0, high_open=True, doc="target fraction of pruned weights"),
    _n("train.steps", "int", low=0, low_open=True, optional=True, doc="training length in steps (or train.epochs)"),
    _n("train.epochs", low=0, low_open=True, optional=True, doc="training length in epochs (or train.steps)"),
    _n("train.batch_size", "int", low=1, doc="examples per step"),
    _n("train.eval_every", "int", low=1, optional=True, doc="steps between evaluations"),
    _n("train.eval_every_epochs", low=0, low_open=True, optional=True, doc="epochs between evaluations"),
    _n("train.checkpoint_every", "int", low=1, optional=True, doc="steps between resume points"),
    _n("train.checkpoint_seconds", low=0.0, optional=True, doc="seconds between resume points"),
    _n("train.snapshot_every", "int", low=1, optional=True, doc="steps between kept snapshots"),
    _n("train.grad_clip", low=0, low_open=True, optional=True, doc="gradient norm clip"),
    Param("optim.name", "choice", "sgd", "optimizer", choices=OPTIMIZERS),
    _n("optim.lr", low=0.0, doc="learning rate"),
    _n("optim.weight_decay", low=0.0, doc="weight decay"),
    _n("optim.momentum", low=0.0, high=1.0, high_open=True, doc="momentum"),
    _n("optim.warmup_steps", "int", low=0, doc="linear warm-up steps"),
    Param("optim.schedule", "choice", "constant", "learning-rate schedule", choices=SCHEDULES),
    _n("dataset.val_fraction", low=0.0, high=1.0, high_open=True, optional=True, doc="train fraction held out"),
    _n("dataset.label_noise", low=0.0, high=1.0, optional=True, doc="fraction of labels replaced at random"),
    _n("dataset.label_noise_seed", "int", low=0, high=MAX_SEED, optional=True, doc="seed of the label noise"),
    _n("dataset.split_seed", "int", low=0, high=MAX_SEED, optional=True, doc="seed of the val split"),
    Param("model.widths", "list", None, "hidden layer widths of an MLP", optional=True, item=_positive_int,
          items="positive integers", min_items=1),
    Param("optim.milestones", "list", None, "fractions of training where a step schedule multiplies the LR by gamma",
          optional=True, item=_fraction, items="fractions of training in (0, 1]"),
    Param("hardware.precision", "choice", "fp32", "compute precision", choices=PRECISIONS),
    Param("hardware.kernel", "choice", "auto", "masked-matmul backend", choices=KERNELS),
    _n("hardware.threads", "int", low=1, optional=True, doc="CPU threads"),
], check=(_steps_or_epochs, _mnist1d_settings, _milestones), doc="The keys every run uses.")

def all_specs() -> dict[str, Spec]:
    """{method name: Spec} of every method of the package (its declaration's, `overparam.methods`)."""
    from overparam.methods import methods

    return {name: method.spec for name, method in methods().items()}


def spec_for(name: str | None) -> Spec | None:
    """The Spec of the registered method `name`, or None (a user's own component declares none)."""
    return all_specs().get(name) if name else None


# The calibration set of one-shot methods (drawn by overparam.recipes.shared.calibration); a method's Spec
# extends it (`extends=(CALIB,)`).
CALIB = Spec("calib", [
    Param("calib.samples", "int", 128, "calibration sequences (text) or examples (classifiers) from the train "
          "split", low=1),
    Param("calib.seq_len", "int", None, "tokens per calibration sequence (text); null: the dataset's block size",
          low=1, optional=True),
    Param("calib.seed", "int", 0, "seed of the calibration draw", low=0, high=MAX_SEED),
], doc="Calibration set of one-shot methods.")
