"""The merge family's parameters (soups, task-vector merges, fisher, rebasin, lmc, wise_ft, sms, averaging).

Torch-free: `runner ls method ties` reads these. The checks that open the ingredient runs stay with each
recipe (its `check(params, cfg)`, declared with `check=True` and imported only when a run is validated).
task_arithmetic, ties, dare, breadcrumbs, della and della_linear are rows of the task-vector merge's preset
table; slerp, nuslerp, karcher, model_stock and sce rows of the per-tensor merge's (`preset=True`).
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
SPARSIFY_MODES = ("none", "magnitude", "random", "breadcrumbs", "della")
TV_SCOPES = ("global", "tensor")
CONSENSUS = ("none", "sign", "sum", "count")
KEPT = ("round", "floor")
RESCALE = ("auto", "none", "inverse", "l1")

INGREDIENTS = Param("ingredients", "runs", None, "runs to merge: run dirs (dir or dir@tag), a multirun dir or a glob",
                    optional=True)
BASE = Param("base", "run", None, "the shared starting model the ingredients were fine-tuned from", optional=True)
LAMBDA_DOC = "scale of the summed task vectors added to the base"


def _numbers(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _setting(value) -> bool:
    """A number, a gradient list across blocks or a list of {filter, value} (merge/gradients.py)."""
    from overparam.recipes.merge.gradients import check_setting

    try:
        check_setting("weight", value)
    except UserError:
        return False
    return True


def _weights(method: str) -> Param:
    return Param(f"{method}.weights", "list", None, "one weight per ingredient, multiplied into its task vector "
                 "(a number, a gradient list across blocks or [{filter, value}]); null: 1 each",
                 items="numbers, gradient lists or filter lists", item=_setting, optional=True)

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
    Param("ties.consensus", "choice", None, "null/sign: the paper's election (a zero sum takes the majority sign) | "
          "sum: mergekit's (sign of the weighted sum, zero positive) | count: mergekit's count of signs",
          choices=("sign", "sum", "count"), optional=True),
    Param("ties.kept", "choice", None, "kept count: null/round: round(density * n) | floor: int(density * n), at "
          "least 1 (mergekit)", choices=KEPT, optional=True),
    _weights("ties"),
], extends=(MERGE,), doc="TIES merging: trim, elect signs, average agreeing entries (Yadav et al. 2023; "
    "mergekit's ties: consensus=sum scope=tensor kept=floor).")


def _density_gamma(params: Params, cfg: dict) -> None:
    if params["task_vectors.sparsify"] == "breadcrumbs" and \
            params["task_vectors.density"] + params["task_vectors.gamma"] > 1.0:
        raise UserError(f"task_vectors.density + task_vectors.gamma must be at most 1 (breadcrumbs keeps density "
                        f"below the dropped gamma), got {params['task_vectors.density']} + "
                        f"{params['task_vectors.gamma']}")


TASK_VECTORS = Spec("task_vectors", [
    INGREDIENTS, BASE, TASKS,
    Param("task_vectors.sparsify", "choice", "none", "none | magnitude (top density by |delta|) | random (DARE: "
          "keep with probability density, rescale) | breadcrumbs (drop gamma largest and the smallest) | della "
          "(keep with probability density +- epsilon by magnitude rank)",
          choices=SPARSIFY_MODES),
    Param("task_vectors.density", "float", 1.0, "fraction of each task vector's entries kept",
          low=0.0, high=1.0, low_open=True),
    Param("task_vectors.gamma", "float", 0.0, "breadcrumbs: fraction of the largest |delta| dropped",
          low=0.0, high=1.0, high_open=True),
    Param("task_vectors.consensus", "choice", "none", "none: sum | sign: TIES sign election, mean of the agreeing "
          "entries | sum, count: mergekit's election (sign of the weighted sum or of the count of signs)",
          choices=CONSENSUS),
    Param("task_vectors.scope", "choice", "tensor", "rank entries within each tensor or over the whole task vector",
          choices=TV_SCOPES),
    Param("task_vectors.lambda", "float", 1.0, "scale of the combined task vector added to the base"),
    _weights("task_vectors"),
    Param("task_vectors.normalize", "bool", None, "divide by the summed weights (of the agreeing models, with "
          "consensus); null: with consensus only", optional=True),
    Param("task_vectors.rescale", "choice", None, "survivors' scale: null/auto (random 1/density, della 1/p, others "
          "none) | none | inverse | l1 (keep each tensor's L1 norm, mergekit)", choices=RESCALE, optional=True),
    Param("task_vectors.kept", "choice", None, "kept counts: null/round (the papers) | floor (mergekit)",
          choices=KEPT, optional=True),
    Param("task_vectors.epsilon", "float", None, "della: keep probabilities spread density +- epsilon by rank; "
          "null: 0", low=0.0, high=0.5, optional=True),
], check=(_density_gamma, lambda params, cfg: _della_bounds(params, "task_vectors")), extends=(MERGE,),
    doc="Task-vector merge: sparsify, combine (sum or sign consensus), add lambda times it to the base.")

DARE = Spec("dare", [
    INGREDIENTS, BASE,
    Param("dare.drop", "float", 0.9, "drop probability p of every task-vector entry", low=0.0, high=1.0,
          high_open=True),
    Param("dare.lambda", "float", 1.0, LAMBDA_DOC),
    Param("dare.consensus", "choice", None, "null/none: the sum (mergekit's dare_linear) | sum, count: mergekit's sign "
          "election, agreeing entries summed (dare_ties)", choices=("none", "sum", "count"), optional=True),
    Param("dare.rescale", "choice", None, "null/inverse: survivors times 1/(1-p) (the paper) | l1: to each tensor's "
          "L1 norm (mergekit)", choices=("inverse", "l1"), optional=True),
    _weights("dare"),
], extends=(MERGE,), doc="DARE: random drop and rescale, then task arithmetic (Yu et al. 2024).")

BREADCRUMBS = Spec("breadcrumbs", [
    INGREDIENTS, BASE,
    Param("breadcrumbs.beta", "float", 0.01, "fraction of entries with the largest |delta| dropped per layer",
          low=0.0, high=1.0, high_open=True),
    Param("breadcrumbs.gamma", "float", 0.9, "fraction of entries with the smallest |delta| dropped per layer",
          low=0.0, high=1.0, high_open=True),
    Param("breadcrumbs.lambda", "float", 1.0, LAMBDA_DOC),
], check=_beta_gamma, extends=(MERGE,),
    doc="Model breadcrumbs: drop outliers and small entries, then task arithmetic.")



def _della_bounds(params: Params, method: str) -> None:
    if method == "task_vectors" and params["task_vectors.sparsify"] != "della":
        return
    density, epsilon = params[f"{method}.density"], params[f"{method}.epsilon"] or 0.0
    if density < 1 and not (0 < density - epsilon and density + epsilon < 1):
        raise UserError(f"{method}.density +- {method}.epsilon must lie inside (0, 1) (keep probabilities), got "
                        f"{density} +- {epsilon}")


def _della_spec(name: str, doc: str) -> Spec:
    return Spec(name, [
        INGREDIENTS, BASE, TASKS,
        Param(f"{name}.density", "float", 0.7, "mean keep probability of each task-vector entry",
              low=0.0, high=1.0, low_open=True),
        Param(f"{name}.epsilon", "float", 0.15, "keep probabilities spread from density - epsilon (smallest |delta| "
              "of a row) to density + epsilon (largest)", low=0.0, high=0.5),
        Param(f"{name}.rescale", "choice", "l1", "l1: survivors scaled to each tensor's L1 norm (mergekit) | inverse: "
              "by 1/p (the paper) | none", choices=("l1", "inverse", "none")),
        Param(f"{name}.normalize", "bool", name == "della", "divide by the summed weights (of the agreeing models)"),
        Param(f"{name}.lambda", "float", 1.0, LAMBDA_DOC),
        _weights(name),
    ], check=lambda params, cfg: _della_bounds(params, name), extends=(MERGE,), doc=doc)


DELLA = _della_spec("della", "DELLA: magnitude-ranked random drops, sign election, mean (Deep et al. 2024).")
DELLA_LINEAR = _della_spec("della_linear", "DELLA without sign election: magnitude-ranked drops, weighted sum "
                           "(Deep et al. 2024).")


def _slerp_t(params: Params, cfg: dict) -> None:
    from overparam.recipes.merge.gradients import check_setting

    check_setting("slerp.t", params["slerp.t"], 0.0, 1.0)


SLERP = Spec("slerp", [
    INGREDIENTS,
    Param("slerp.t", "any", 0.5, "interpolation from ingredient 0 (t=0) to ingredient 1 (t=1): a number, a list "
          "(a gradient across blocks) or [{filter: <name part>, value: ...}, ...]"),
    Param("slerp.dot_threshold", "float", 0.9995, "rows whose directions' |cos| exceeds this interpolate linearly",
          low=0.0, high=1.0),
], check=_slerp_t, extends=(MERGE,), doc="SLERP of two models, row by row (Shoemake 1985; mergekit's slerp).")


def _two_weights(params: Params, cfg: dict) -> None:
    if len(params["nuslerp.weights"]) != 2:
        raise UserError(f"nuslerp.weights must be two numbers (one per model), got {list(params['nuslerp.weights'])}")


NUSLERP = Spec("nuslerp", [
    INGREDIENTS,
    Param("base", "run", None, "optional: interpolate the two task vectors from this run, then add it back",
          optional=True),
    Param("nuslerp.weights", "list", [1.0, 1.0], "relative weights of the two models (t = w1 / (w0 + w1))",
          items="numbers", item=_numbers, min_items=2),
    Param("nuslerp.row_wise", "bool", False, "interpolate columns (along the first axis) instead of rows"),
    Param("nuslerp.flatten", "bool", True, "interpolate the whole tensor as one vector"),
], check=_two_weights, extends=(MERGE,), doc="NuSLERP: SLERP by model weights, of task vectors with a base "
    "(mergekit's nuslerp).")

KARCHER = Spec("karcher", [
    INGREDIENTS,
    Param("karcher.max_iter", "int", 10, "most gradient steps on the sphere", low=1),
    Param("karcher.tol", "float", 1.0e-05, "stop when the tangent step is shorter", low=0.0, low_open=True),
], extends=(MERGE,), doc="Karcher mean: the Riemannian mean of directions, times the mean norm (mergekit's karcher).")

MODEL_STOCK = Spec("model_stock", [
    INGREDIENTS, BASE, TASKS,
    Param("model_stock.filter_wise", "bool", False, "one ratio per row instead of per tensor"),
], extends=(MERGE,), doc="Model Stock: ratio k cos / (1 + (k-1) cos) toward the fine-tuned mean "
    "(Jang et al. 2024).")

SCE = Spec("sce", [
    INGREDIENTS, BASE, TASKS,
    Param("sce.select_topk", "float", 1.0, "fraction of entries kept, those varying most across models",
          low=0.0, high=1.0),
], extends=(MERGE,), doc="SCE: select by variance, calculate weights, erase minority signs (Wan et al. 2024).")

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
for _spec in (TASK_VECTORS, TASK_ARITHMETIC, TIES, DARE, BREADCRUMBS, DELLA, DELLA_LINEAR):
    declare(_spec, "merge", module="task_vectors", check=True, preset=True,
            target=f"overparam.recipes.merge.{_spec.name}.run")
# The merges of one tensor of every model at a time: rows of per_tensor.ROWS, one recipe.
for _spec in (SLERP, NUSLERP, KARCHER, MODEL_STOCK, SCE):
    declare(_spec, "merge", module="per_tensor", check=True, preset=True,
            target=f"overparam.recipes.merge.{_spec.name}.run")
