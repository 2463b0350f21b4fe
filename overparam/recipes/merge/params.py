"""The merge family's parameters (soups, task-vector merges, fisher, rebasin, lmc, wise_ft, sms, averaging).

Torch-free: `runner ls method ties` reads these. The checks that open the ingredient runs stay with each
recipe (its `check(params, cfg)`, declared with `check=True` and imported only when a run is validated).
task_arithmetic, ties, dare and breadcrumbs are rows of the task-vector merge's preset table (`preset=True`).
"""

from __future__ import annotations

from overparam.errors import UserError
from overparam.methods import declare
from overparam.params import Param, Params, Spec

FISHER_KINDS = ("exact", "empirical")
LMC_SPLITS = ("train", "val", "test")
REBASIN_OUTPUTS = ("average", "aligned")
SMS_VARY = ("seed", "data_order", "weight_decay", "lr")
SMS_SOUPS = ("uniform", "greedy")
ACCEPT = ("gt", "ge")
# The task-vector merge: how each task vector is sparsified, ranked (per tensor or over all), combined.
SPARSIFY_MODES = ("none", "magnitude", "random", "breadcrumbs")
TV_SCOPES = ("global", "tensor")
CONSENSUS = ("none", "sign")

INGREDIENTS = Param("ingredients", "runs", None, "runs to merge: run dirs (dir or dir@tag), a multirun dir or a glob",
                    optional=True)
BASE = Param("base", "run", None, "the shared starting model the ingredients were fine-tuned from", optional=True)
LAMBDA_DOC = "scale of the summed task vectors added to the base"

MERGE = Spec("merge", [
    Param("merge.bn_recalibrate", "bool", False, "recompute BatchNorm statistics on train data after merging"),
    Param("merge.bn_fraction", "float", 0.25, "fraction of the train split used for the recalibration",
          low=0.0, high=1.0, low_open=True),
    Param("merge.allow_val_overlap", "bool", False, "evaluate on a val split some ingredients trained on "
          "(refused by default: optimistic)"),
])
TASKS = Param("merge.tasks", "bool", False, "also evaluate on each ingredient's own task and report "
              "normalized_accuracy (multitask merging)", optional=True)


def _beta_gamma(params: Params, cfg: dict) -> None:
    if params["breadcrumbs.beta"] + params["breadcrumbs.gamma"] >= 1.0:
        raise UserError("breadcrumbs.beta + breadcrumbs.gamma must be below 1 (they would drop every entry)")


def _needs_val(what: str):
    def rule(params: Params, cfg: dict) -> None:
        if not float((cfg.get("dataset") or {}).get("val_fraction") or 0):
            raise UserError(f"{what} selects on the val split: set dataset.val_fraction > 0")
    return rule


def _sms_rules(params: Params, cfg: dict) -> None:
    if not float(cfg.get("sparsity") or 0) > 0:
        raise UserError("sms needs a target sparsity > 0 (sparsity=0.9)")
    vary, copies, values = params["sms.vary"], params["sms.copies"], params["sms.values"]
    if vary in ("lr", "weight_decay"):
        if not isinstance(values, (list, tuple)) or len(values) != copies:
            raise UserError(f"sms.vary={vary} needs sms.values: one number per copy ({copies} of them)")
        if any(not isinstance(v, (int, float)) or v < 0 for v in values):
            raise UserError(f"sms.values must be non-negative numbers, got {list(values)}")
    if params["sms.soup"] == "greedy":
        _needs_val("sms.soup=greedy")(params, cfg)


def _lmc_val(params: Params, cfg: dict) -> None:
    if params["lmc.split"] == "val" and not float((cfg.get("dataset") or {}).get("val_fraction") or 0):
        raise UserError("lmc.split=val needs dataset.val_fraction > 0")


UNIFORM_SOUP = Spec("uniform_soup", [INGREDIENTS], extends=(MERGE,),
                    doc="Uniform model soup: the mean of the ingredients' weights.")

GREEDY_SOUP = Spec("greedy_soup", [
    INGREDIENTS,
    Param("soup.accept", "choice", "gt", "gt: keep an ingredient only if val accuracy rises | ge: also when equal",
          choices=ACCEPT),
], check=_needs_val("greedy_soup"), extends=(MERGE,),
    doc="Greedy model soup selected on val accuracy.")

CHECKPOINT_AVERAGE = Spec("checkpoint_average", [
    INGREDIENTS,
    Param("checkpoint_average.last", "int", None, "with one run: average its last K snapshots; null: the runs given",
          low=1, optional=True),
], extends=(MERGE,), doc="Average checkpoints of one run or several.")

TASK_ARITHMETIC = Spec("task_arithmetic", [
    INGREDIENTS, BASE, TASKS,
    Param("task_arithmetic.lambda", "float", 1.0, "scale of the summed task vectors (1/N: their mean)"),
], extends=(MERGE,), doc="Task arithmetic: base + lambda * sum of task vectors.")

TIES = Spec("ties", [
    INGREDIENTS, BASE, TASKS,
    Param("ties.density", "float", 0.2, "fraction of each task vector's entries kept (largest |delta|)",
          low=0.0, high=1.0, low_open=True),
    Param("ties.scope", "choice", "global", "global: trim over the whole task vector (the paper's code) | "
          "tensor: within each tensor", choices=TV_SCOPES),
    Param("ties.lambda", "float", 1.0, "scale of the merged task vector added to the base"),
], extends=(MERGE,), doc="TIES merging: trim, elect signs, average agreeing entries.")


def _density_gamma(params: Params, cfg: dict) -> None:
    if params["task_vectors.sparsify"] == "breadcrumbs" and \
            params["task_vectors.density"] + params["task_vectors.gamma"] > 1.0:
        raise UserError(f"task_vectors.density + task_vectors.gamma must be at most 1 (breadcrumbs keeps density "
                        f"below the dropped gamma), got {params['task_vectors.density']} + "
                        f"{params['task_vectors.gamma']}")


TASK_VECTORS = Spec("task_vectors", [
    INGREDIENTS, BASE, TASKS,
    Param("task_vectors.sparsify", "choice", "none", "none | magnitude (top density by |delta|) | random (DARE: "
          "keep with probability density, rescale) | breadcrumbs (drop gamma largest and the smallest)",
          choices=SPARSIFY_MODES),
    Param("task_vectors.density", "float", 1.0, "fraction of each task vector's entries kept",
          low=0.0, high=1.0, low_open=True),
    Param("task_vectors.gamma", "float", 0.0, "breadcrumbs: fraction of the largest |delta| dropped",
          low=0.0, high=1.0, high_open=True),
    Param("task_vectors.consensus", "choice", "none", "none: sum | sign: TIES sign election, mean of the agreeing "
          "entries", choices=CONSENSUS),
    Param("task_vectors.scope", "choice", "tensor", "rank entries within each tensor or over the whole task vector",
          choices=TV_SCOPES),
    Param("task_vectors.lambda", "float", 1.0, "scale of the combined task vector added to the base"),
], check=_density_gamma, extends=(MERGE,),
    doc="Task-vector merge: sparsify, combine (sum or sign consensus), add lambda times it to the base.")

DARE = Spec("dare", [
    INGREDIENTS, BASE,
    Param("dare.drop", "float", 0.9, "drop probability p of every task-vector entry", low=0.0, high=1.0,
          high_open=True),
    Param("dare.lambda", "float", 1.0, LAMBDA_DOC),
], extends=(MERGE,), doc="DARE: random drop and rescale, then task arithmetic.")

BREADCRUMBS = Spec("breadcrumbs", [
    INGREDIENTS, BASE,
    Param("breadcrumbs.beta", "float", 0.01, "fraction of entries with the largest |delta| dropped per layer",
          low=0.0, high=1.0, high_open=True),
    Param("breadcrumbs.gamma", "float", 0.9, "fraction of entries with the smallest |delta| dropped per layer",
          low=0.0, high=1.0, high_open=True),
    Param("breadcrumbs.lambda", "float", 1.0, LAMBDA_DOC),
], check=_beta_gamma, extends=(MERGE,),
    doc="Model breadcrumbs: drop outliers and small entries, then task arithmetic.")

FISHER = Spec("fisher", [
    INGREDIENTS,
    Param("fisher.kind", "choice", "exact", "exact: over the model's label distribution | empirical: true labels",
          choices=FISHER_KINDS),
    Param("fisher.samples", "int", 256, "training examples the Fisher is estimated on", low=1),
    Param("fisher.floor", "float", 1.0e-06, "lower bound on every Fisher entry", low=0.0),
    Param("fisher.weights", "list", None, "per-ingredient weights; null: all equal", items="numbers",
          optional=True),
], extends=(MERGE,), doc="Fisher merging.")

REBASIN = Spec("rebasin", [
    INGREDIENTS,
    Param("rebasin.output", "choice", "average", "average: the mean of the aligned models | aligned: the second "
          "model aligned to the first", choices=REBASIN_OUTPUTS),
    Param("rebasin.max_iterations", "int", 100, "most sweeps over all permutation groups", low=1),
], extends=(MERGE,), doc="Git Re-Basin weight matching, then average.")

LMC = Spec("lmc", [
    INGREDIENTS,
    Param("lmc.points", "int", 11, "evenly spaced points on the path, endpoints included", low=2),
    Param("lmc.split", "choice", "test", "split the barrier is measured on", choices=LMC_SPLITS),
    Param("lmc.align", "bool", True, "also measure the path after weight matching"),
    Param("lmc.from", "run", None, "a checkpoint to train two copies from with different data orders",
          optional=True),
    Param("lmc.seeds", "list", None, "two init seeds to train two models of `model` here", items="seeds",
          optional=True),
], check=_lmc_val, extends=(MERGE,), doc="Linear mode connectivity: the loss barrier.")

WISE_FT = Spec("wise_ft", [
    INGREDIENTS, BASE,
    Param("merge.shift", "any", None, "dataset keys of a shifted copy every alpha is also evaluated on",
          optional=True),
    Param("wise_ft.alphas", "list", [0.0, 0.25, 0.5, 0.75, 1.0], "weights of the fine-tuned model "
          "((1 - alpha) * base + alpha * tuned)", items="numbers", min_items=1,
          message="{key} must be a non-empty list of numbers, e.g. [0,0.25,0.5,0.75,1]"),
    Param("wise_ft.save_alpha", "float", None, "the alpha saved as the run's model; null: the best on val",
          optional=True),
], extends=(MERGE,), doc="WiSE-FT: interpolate base and fine-tuned weights.")

SMS = Spec("sms", [
    BASE,
    Param("sms.phases", "int", 3, "prune-retrain-average phases", low=1),
    Param("sms.copies", "int", 3, "copies retrained per phase", low=1),
    Param("sms.vary", "choice", "seed", "what differs between copies", choices=SMS_VARY),
    Param("sms.values", "list", None, "one value per copy when vary is lr or weight_decay", items="numbers",
          optional=True),
    Param("sms.soup", "choice", "uniform", "uniform: average all copies | greedy: add copies by val accuracy",
          choices=SMS_SOUPS),
    Param("sms.accept", "choice", "ge", "greedy soups: gt keeps a copy only if val accuracy rises; ge also when "
          "equal", choices=ACCEPT),
    Param("sms.retrain_epochs", "float", None, "epochs each copy retrains per phase; null: train.*",
          low=0, low_open=True, optional=True),
    Param("sms.exclude_output", "bool", False, "keep the output layer dense"),
], check=_sms_rules, extends=(MERGE,), doc="Sparse model soups.")

for _spec in (UNIFORM_SOUP, GREEDY_SOUP, CHECKPOINT_AVERAGE, FISHER, REBASIN, LMC, WISE_FT, SMS):
    declare(_spec, "merge", check=True)
# The task-vector presets differ only by settings: rows of task_vectors.PRESETS, one recipe. Their `_target_`
# stays the path each had as a module of its own, so existing runs keep their identity.
for _spec in (TASK_VECTORS, TASK_ARITHMETIC, TIES, DARE, BREADCRUMBS):
    declare(_spec, "merge", module="task_vectors", check=True, preset=True,
            target=f"overparam.recipes.merge.{_spec.name}.run")
