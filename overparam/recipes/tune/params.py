"""The tune family's parameters (finetune, sparse_finetune, lora, vera, ia3, adalora, self_pretrain; the
search's seeds). Torch-free."""

from __future__ import annotations

from overparam.errors import UserError
from overparam.methods import declare
from overparam.params import Param, Params, Spec

FINETUNE_MODES = ("all", "head", "norm_bias", "bias", "norm")


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
    """The searched method (`method.name`) is a registered one, not the search, and its own checks pass."""
    from overparam.methods import methods

    declared = methods()
    name = (cfg.get("method") or {}).get("name")
    if name == "search":
        raise UserError("hparams_search: the searched method cannot be the search itself")
    if name not in declared:
        raise UserError(f"hparams_search: method {name!r} is not registered; choose one of: "
                        f"{', '.join(sorted(declared))}")
    declared[name].spec.validate(cfg)


def _budget_shrinks(params: Params, cfg: dict) -> None:
    if params["adalora.target_r"] > params["adalora.init_r"]:
        raise UserError(f"adalora.target_r={params['adalora.target_r']} is above adalora.init_r="
                        f"{params['adalora.init_r']}: the rank budget only shrinks")


def _seed_list(key: str, default: list[int], doc: str) -> Param:
    return Param(key, "list", default, doc, items="seeds", min_items=1, message=f"{key} must be a non-empty list of seeds",
                 item=lambda s: isinstance(s, int) and not isinstance(s, bool))


FROM = Param("from", "run", None, "the starting run: <run dir> or <run dir>@level_<L>", optional=True)

FINETUNE = Spec("finetune", [
    FROM,
    Param("finetune.train", "choice", "all", "what trains: all | head (linear probe) | norm_bias (PERP's repair "
          "after pruning) | bias | norm",
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

_TARGETS_MESSAGE = "{key} must be a non-empty list of module-name patterns, e.g. [fc0,fc1] or ['*']"
ADAPT_FROM = Param("from", "run", None, "the model to adapt; null: a fresh model of the run's config", optional=True)


def _targets(key: str, default, doc: str, optional: bool = False) -> Param:
    return Param(key, "list", default, doc, items="patterns", min_items=1, message=_TARGETS_MESSAGE,
                 optional=optional)


LORA = Spec("lora", [
    ADAPT_FROM,
    Param("lora.rank", "int", 4, "rank r of each update B A", low=1),
    Param("lora.alpha", "float", 8.0, "scale of the update: alpha / rank (alpha / sqrt(rank) with rslora)", low=0.0,
          low_open=True),
    Param("lora.dropout", "float", 0.0, "dropout on the adapter's input", low=0.0, high=1.0, high_open=True),
    _targets("lora.targets", ["*"], "module-name patterns (fnmatch) of the layers to adapt"),
    Param("lora.init", "choice", "kaiming", "kaiming (A random, B zero) | pissa (top-r SVD of W) | olora (QR of W)",
          choices=("kaiming", "pissa", "olora")),
    Param("lora.rslora", "bool", False, "rank-stabilized scale alpha / sqrt(rank) (rsLoRA)"),
    Param("lora.dora", "bool", False, "DoRA: a trained magnitude per output row times the adapted direction"),
    Param("lora.mask", "bool", True, "on a pruned base, mask the update with the layer's mask (the merged model as "
          "sparse)"),
    Param("lora.train_head", "bool", False, "also train the classifier in full"),
    Param("lora.merge", "bool", True, "fold the adapters into the weights at the end"),
], doc="LoRA adapters on a frozen model; DoRA, rsLoRA, PiSSA/OLoRA init, masked for a pruned base (peft's).")

VERA = Spec("vera", [
    ADAPT_FROM,
    Param("vera.rank", "int", 256, "rank r of the shared frozen random matrices A (r x in) and B (out x r)", low=1),
    Param("vera.d_initial", "float", 0.1, "initial value of the scaling vector d (b starts at zero)"),
    Param("vera.dropout", "float", 0.0, "dropout on the adapter's input", low=0.0, high=1.0, high_open=True),
    _targets("vera.targets", ["*"], "module-name patterns (fnmatch) of the Linear layers to adapt"),
    Param("vera.mask", "bool", True, "on a pruned base, mask the update with the layer's mask"),
    Param("vera.train_head", "bool", False, "also train the classifier in full"),
    Param("vera.merge", "bool", True, "fold the adapters into the weights at the end"),
], doc="VeRA: shared frozen random low-rank matrices, trained scaling vectors (Kopiczko et al. 2024; peft's).")

IA3 = Spec("ia3", [
    ADAPT_FROM,
    _targets("ia3.targets", None, "Linear layers whose output (or, if feedforward, input) is rescaled; null: "
             "peft's defaults for the model type, every Linear layer for the classifiers", optional=True),
    Param("ia3.feedforward", "list", None, "patterns among the targets scaled at their input; null: peft's defaults",
          items="patterns", optional=True),
    Param("ia3.train_head", "bool", False, "also train the classifier in full"),
    Param("ia3.merge", "bool", True, "fold the scalings into the weights at the end"),
], doc="(IA)^3: learned rescaling of activations (Liu et al. 2022; peft's IA3).")

ADALORA = Spec("adalora", [
    ADAPT_FROM,
    Param("adalora.init_r", "int", 12, "starting rank r of every layer's update B diag(E) A", low=1),
    Param("adalora.target_r", "int", 8, "average rank per layer the budget shrinks to", low=1),
    Param("adalora.alpha", "float", 8.0, "scale of the update: alpha / r (0: r / r)", low=0.0),
    Param("adalora.tinit", "int", 0, "warm-up steps before the budget starts shrinking", low=0),
    Param("adalora.tfinal", "int", 0, "final steps with the rank pattern fixed", low=0),
    Param("adalora.delta_t", "int", 1, "steps between two reallocations", low=1),
    Param("adalora.beta1", "float", 0.85, "EMA factor of the importance", low=0.0, high=1.0, low_open=True,
          high_open=True),
    Param("adalora.beta2", "float", 0.85, "EMA factor of the uncertainty", low=0.0, high=1.0, low_open=True,
          high_open=True),
    Param("adalora.orth_reg_weight", "float", 0.5, "weight of the orthogonality penalty on A and B", low=0.0),
    Param("adalora.dropout", "float", 0.0, "dropout on the adapter's input", low=0.0, high=1.0, high_open=True),
    _targets("adalora.targets", ["*"], "module-name patterns (fnmatch) of the Linear layers to adapt"),
    Param("adalora.mask", "bool", True, "on a pruned base, mask the update with the layer's mask"),
    Param("adalora.train_head", "bool", False, "also train the classifier in full"),
    Param("adalora.merge", "bool", True, "fold the adapters into the weights at the end"),
], check=_budget_shrinks,
    doc="AdaLoRA: SVD-shaped LoRA whose rank budget moves to the important layers (Zhang et al. 2023; peft's).")

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

for _spec in (FINETUNE, SPARSE_FINETUNE, LORA, VERA, IA3, ADALORA, SELF_PRETRAIN):
    declare(_spec, "tune")
# A search has no configs/method file: an hparams_search preset selects it for the method it searches.
declare(SEARCH, "tune", usage="runner train -m hparams_search=lr_wd")
