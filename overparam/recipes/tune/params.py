"""The tune family's parameters (finetune, sparse_finetune, lora, self_pretrain; the search's seeds). Torch-free."""

from __future__ import annotations

from overparam.errors import UserError
from overparam.methods import declare
from overparam.params import Param, Params, Spec

FINETUNE_MODES = ("all", "head", "norm_bias")


def _from_required(method: str):
    def rule(params: Params, cfg: dict) -> None:
        if not params["from"]:
            raise UserError(f"method={method} needs from=<run dir> (or <run dir>@level_<L>)")
    return rule


def _one_of_mask_fraction(params: Params, cfg: dict) -> None:
    if (params["sparse_finetune.mask"] is None) == (params["sparse_finetune.fraction"] is None):
        raise UserError("set exactly one of sparse_finetune.mask and sparse_finetune.fraction")


def _corrupts(params: Params, cfg: dict) -> None:
    if not params["self_pretrain.mask_fraction"] and not params["self_pretrain.noise"]:
        raise UserError("self_pretrain needs a corruption: mask_fraction > 0 or noise > 0")


def _seeds_apart(params: Params, cfg: dict) -> None:
    overlap = sorted(set(params["search.tuning_seeds"]) & set(params["search.eval_seeds"]))
    if overlap:
        raise UserError(f"search.tuning_seeds and search.eval_seeds share {overlap}: evaluate on unseen seeds")


def _searched_method(params: Params, cfg: dict) -> None:
    """The searched method's own checks pass."""
    from overparam.methods import by_target, methods
    from overparam.recipes.tune.search import inner_target

    methods()[by_target(inner_target(cfg))].spec.validate(cfg)


def _seed_list(key: str, default: list[int], doc: str) -> Param:
    return Param(key, "list", default, doc, items="seeds", min_items=1, message=f"{key} must be a non-empty list of seeds",
                 item=lambda s: isinstance(s, int) and not isinstance(s, bool))


FROM = Param("from", "run", None, "the starting run: <run dir> or <run dir>@level_<L>", optional=True)

FINETUNE = Spec("finetune", [
    FROM,
    Param("finetune.train", "choice", "all", "what trains: all | head (linear probe) | norm_bias",
          choices=FINETUNE_MODES),
    Param("finetune.dense", "bool", False, "drop a sparse source's mask and fine-tune densely"),
], check=_from_required("finetune"), doc="Fine-tune a finished run's model.")

SPARSE_FINETUNE = Spec("sparse_finetune", [
    FROM,
    Param("sparse_finetune.mask", "str", None, "weights to train: a run <dir>@level_<L> or a safetensors mask file",
          optional=True),
    Param("sparse_finetune.fraction", "float", None, "or: per layer, train this fraction of the smallest weights",
          low=0.0, high=1.0, low_open=True, optional=True),
], check=(_from_required("sparse_finetune"), _one_of_mask_fraction),
    doc="Sparse fine-tuning of a fixed subset of a run's weights.")

LORA = Spec("lora", [
    Param("from", "run", None, "the model to adapt; null: a fresh model of the run's config", optional=True),
    Param("lora.rank", "int", 4, "rank r of each update B A", low=1),
    Param("lora.alpha", "float", 8.0, "scale of the update: alpha / rank", low=0.0, low_open=True),
    Param("lora.dropout", "float", 0.0, "dropout on the adapter's input", low=0.0, high=1.0, high_open=True),
    Param("lora.targets", "list", ["*"], "module-name patterns (fnmatch) of the layers to adapt", items="patterns",
          min_items=1, message="{key} must be a non-empty list of module-name patterns, e.g. [fc0,fc1] or ['*']"),
    Param("lora.train_head", "bool", False, "also train the classifier in full"),
    Param("lora.merge", "bool", True, "fold the adapters into the weights at the end"),
], doc="LoRA adapters on a frozen model.")

SELF_PRETRAIN = Spec("self_pretrain", [
    Param("self_pretrain.pretrain_fraction", "float", 0.5, "share of the training steps spent on reconstruction",
          low=0.0, high=1.0, low_open=True, high_open=True),
    Param("self_pretrain.mask_fraction", "float", 0.5, "fraction of input positions hidden (the paper's 50% for "
          "bidirectional models); the loss is on them", low=0.0, high=1.0, high_open=True),
    Param("self_pretrain.noise", "float", 0.0, "std of Gaussian noise added to the corrupted copy", low=0.0),
    Param("self_pretrain.optim.name", "str", None, "reconstruction optimizer (null: the run's)", optional=True),
    Param("self_pretrain.optim.lr", "float", None, "reconstruction learning rate (null: the run's)", low=0.0,
          optional=True),
    Param("self_pretrain.optim.weight_decay", "float", None, "reconstruction weight decay (null: the run's)",
          low=0.0, optional=True),
    Param("self_pretrain.optim.schedule", "choice", None, "reconstruction LR schedule (null: the run's)",
          choices=("constant", "step", "cosine", "linear"), optional=True),
    Param("self_pretrain.optim.warmup_steps", "int", None, "reconstruction warmup steps (null: the run's)", low=0,
          optional=True),
    Param("self_pretrain.grad_clip", "float", 1.0, "clip the reconstruction gradients' global norm (null: the "
          "run's train.grad_clip)", low=0.0, low_open=True, optional=True),
    Param("self_pretrain.baseline", "bool", False, "also train from scratch and report scratch_* figures"),
], check=_corrupts, doc="Self-pretraining by masked reconstruction, then fine-tuning.")

SEARCH = Spec("search", [
    _seed_list("search.tuning_seeds", [0], "seeds each trial trains on (the objective is their mean)"),
    _seed_list("search.eval_seeds", [100, 101, 102], "seeds the best configuration is re-run on afterwards "
               "(disjoint from tuning_seeds)"),
], check=(_seeds_apart, _searched_method), doc="Hyperparameter search on tuning seeds, evaluated on others.")

for _spec in (FINETUNE, SPARSE_FINETUNE, LORA, SELF_PRETRAIN, SEARCH):
    declare(_spec, "tune")
