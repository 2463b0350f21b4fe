"""The prune family's parameters (imp, oneshot, snip, grasp, synflow, random_prune, channel, nm, data_diet, wanda,
sparsegpt).

Torch-free: `runner ls method imp` reads these.
"""

from __future__ import annotations

from overparam.errors import UserError
from overparam.methods import declare
from overparam.params import Param, Params, Spec
from overparam.recipes.shared.choices import (DISTRIBUTIONS, SCOPES, check_sparsity, from_required,
                                             parse_rewind)
from overparam.specs import CALIB

CONTROLS = ("none", "random_reinit", "random_mask", "random_prune")
LR_SCHEDULES = ("ft", "lrw", "clr")
NM_SCHEDULES = ("oneshot", "gradual")
DIET_SCORES = ("el2n", "grand", "random")


def _rate_times_output(params: Params, cfg: dict) -> None:
    output_rate = params["prune.output_rate"]
    if output_rate * params["prune.rate"] >= 1.0:
        raise UserError(f"prune.output_rate={output_rate} times prune.rate={params['prune.rate']} must stay below 1")


def _rewind_inside_training(params: Params, cfg: dict) -> None:
    """rewind syntax, and a rewind point inside training when that is knowable now."""
    kind, amount = parse_rewind(params.rewind)
    train = cfg.get("train") or {}
    steps, epochs = train.get("steps"), train.get("epochs")
    if kind == "it" and steps is not None and amount >= int(steps):
        raise UserError(f"rewind={params.rewind} is not before the end of training (train.steps={steps})")
    if kind == "ep" and epochs is not None and amount >= float(epochs):
        raise UserError(f"rewind={params.rewind} is not before the end of training (train.epochs={epochs})")


def _oneshot_rules(params: Params, cfg: dict) -> None:
    """Without from=: the training rules; with it: a one-pass pruning, which neither rewinds nor trains."""
    if not params["from"]:
        if params["prune.scope"] == "row" or params["prune.pattern"] is not None:
            raise UserError("prune.scope=row and prune.pattern prune a finished run: add from=<run> (N:M with "
                            "training: method=nm)")
        _rewind_inside_training(params, cfg)
        return
    check_sparsity(params, cfg)
    if params.rewind != "init" or params["retrain.lr_schedule"] != "lrw":
        raise UserError("with from=, method=oneshot prunes once and does not retrain (rewind, retrain.* do not "
                        "apply); fine-tune the result with method=finetune from=<this run>")
    if params["prune.output_rate"] not in (None, 1.0):
        raise UserError("with from=, the output layer stays dense (as in the one-shot papers): prune.output_rate "
                        "does not apply")


def _imp_rules(params: Params, cfg: dict) -> None:
    _rate_times_output(params, cfg)
    _rewind_inside_training(params, cfg)


def _nm_rules(params: Params, cfg: dict) -> None:
    n, m = params["nm.n"], params["nm.m"]
    if n >= m:
        raise UserError(f"nm.n={n} must be smaller than nm.m={m}")
    sparsity = float(cfg.get("sparsity") or 0.0)
    if sparsity and abs(sparsity - (1 - n / m)) > 1e-9:
        raise UserError(f"method=nm sets the sparsity by nm.n:nm.m ({n}:{m} = {1 - n / m:g}); "
                        f"leave sparsity at 0 or set it to {1 - n / m:g}")


SCOPE_DOC = "global: one threshold over all prunable layers | layerwise: the same density in every layer"
OUTPUT_RATE_DOC = "multiplier of the output layer's pruned fraction (1 = like the others, 0 = dense)"

REWIND = Spec("rewind", [
    Param("rewind", "str", "init", "weights a pruned level restarts from: init | <N>it | <N>ep (late rewinding) | "
          "none (retrain the trained weights)"),
    Param("retrain.lr_schedule", "choice", "lrw", "with rewind=none: ft (constant last LR) | lrw (replay the "
          "schedule) | clr (10% warm-up, then linear decay)", choices=LR_SCHEDULES),
])

IMP = Spec("imp", [
    Param("prune.rate", "float", 0.2, "fraction of the remaining prunable weights removed per round",
          low=0.0, high=1.0, low_open=True, high_open=True),
    Param("prune.scope", "choice", "global", SCOPE_DOC, choices=SCOPES),
    Param("prune.output_rate", "float", 1.0, "multiplier of the output layer's rate (0.5: the lottery-ticket "
          "paper's FC setting, 0: output layer dense)", low=0.0),
    Param("prune.distribution", "choice", "uniform", "layer densities of control=random_prune: uniform | erk",
          choices=DISTRIBUTIONS),
    Param("prune.cache", "bool", True, "share levels between jobs that differ only in `sparsity`"),
    Param("control", "choice", "none", "lottery-ticket control run on the same levels", choices=CONTROLS),
], check=_imp_rules, extends=(REWIND,), doc="Iterative magnitude pruning with rewinding (lottery tickets).")

FROM = Param("from", "run", None, "the finished run to prune: <run dir> or <run dir>@level_<L>", optional=True)
PATTERN_DOC = "n:m (2:4, 4:8): keep n of every m consecutive weights of a row; null: unstructured at `sparsity`"

ONESHOT = Spec("oneshot", [
    FROM,
    Param("prune.scope", "choice", "global", SCOPE_DOC + " | row (with from=): the same fraction per output row",
          choices=SCOPES + ("row",)),
    Param("prune.pattern", "str", None, "with from=: " + PATTERN_DOC, optional=True),
    Param("prune.output_rate", "float", 1.0, OUTPUT_RATE_DOC, low=0.0, high=1.0),
    Param("prune.cache", "bool", True, "share the dense level 0 between jobs that differ only in `sparsity`"),
], check=_oneshot_rules, extends=(REWIND,),
    doc="One-shot magnitude pruning, then rewind or retrain; with from=<run>: one pass, no retraining.")

WANDA = Spec("wanda", [
    FROM,
    Param("prune.pattern", "str", None, PATTERN_DOC, optional=True),
], check=(from_required("wanda"), check_sparsity), extends=(CALIB,),
    doc="Wanda: one-shot pruning of a run by |W| x input norm, per output row.")

SPARSEGPT = Spec("sparsegpt", [
    FROM,
    Param("prune.pattern", "str", None, PATTERN_DOC, optional=True),
    Param("sparsegpt.blocksize", "int", 128, "columns per lazy-update block (and per adaptive mask choice)", low=1),
    Param("sparsegpt.percdamp", "float", 0.01, "dampening: this fraction of the Hessian's mean diagonal is added "
          "to it", low=0.0, low_open=True),
], check=(from_required("sparsegpt"), check_sparsity), extends=(CALIB,),
    doc="SparseGPT: one-shot pruning of a run with OBS weight reconstruction.")

AT_INIT = Spec("at_init", [
    Param("prune.scope", "choice", "global", SCOPE_DOC, choices=SCOPES),
    Param("prune.output_rate", "float", 1.0, OUTPUT_RATE_DOC, low=0.0, high=1.0),
])

SNIP = Spec("snip", [
    Param("prune.score_batches", "int", 1, "training batches the score is computed on", low=1),
], extends=(AT_INIT,), doc="SNIP: prune at initialization by |g*w|.")

GRASP = Spec("grasp", [
    Param("prune.score_batches", "int", 1, "training batches the score is computed on", low=1),
    Param("prune.temperature", "float", 200.0, "softmax temperature of both passes (200 in the paper's code)",
          low=0.0, low_open=True),
], extends=(AT_INIT,), doc="GraSP: prune at initialization preserving gradient flow.")

SYNFLOW = Spec("synflow", [
    Param("prune.rounds", "int", 100, "scoring/pruning rounds on an exponential density schedule", low=1),
], extends=(AT_INIT,), doc="SynFlow: data-free iterative pruning at initialization.")

RANDOM_PRUNE = Spec("random_prune", [
    Param("prune.distribution", "choice", "uniform", "layer densities: uniform | erk (Erdos-Renyi-Kernel)",
          choices=DISTRIBUTIONS),
    Param("prune.output_rate", "float", 1.0, OUTPUT_RATE_DOC, low=0.0, high=1.0),
], doc="Random pruning at initialization.")

CHANNEL = Spec("channel", [
    Param("channel.scope", "choice", "layerwise", "layerwise: the same fraction per layer | global: rank all "
          "hidden channels by mean |w|", choices=SCOPES),
    Param("channel.min_fraction", "float", 0.25, "every layer keeps at least this fraction of its channels",
          low=0.0, high=1.0, optional=True),
    Param("channel.shrink", "bool", False, "fine-tune a physically narrower network (zoo chain models)"),
], doc="Structured pruning of hidden channels by L1 norm.")

NM = Spec("nm", [
    Param("nm.n", "int", 2, "keep n of every m consecutive weights along each row", low=1),
    Param("nm.m", "int", 4, "group size m (sparsity = 1 - n/m)", low=2),
    Param("nm.schedule", "choice", "oneshot", "oneshot: train, prune, retrain | gradual: N falls during training",
          choices=NM_SCHEDULES),
    Param("nm.gradual_fraction", "float", 0.5, "gradual: fraction of training over which N reaches its target",
          low=0.0, high=1.0, low_open=True),
], check=_nm_rules, doc="N:M semi-structured sparsity by magnitude.")

DATA_DIET = Spec("data_diet", [
    Param("diet.keep", "float", 0.5, "fraction of the training set kept", low=0.0, high=1.0, low_open=True),
    Param("diet.score", "choice", "el2n", "el2n | grand (highest kept) | random (the baseline)", choices=DIET_SCORES),
    Param("diet.seeds", "int", 2, "models whose scores are averaged", low=1),
    Param("diet.epochs", "float", 2, "epochs each scoring model trains before scoring", low=0, low_open=True),
], doc="Data pruning by EL2N or GraNd early-training scores.")

for _spec in (IMP, ONESHOT, SNIP, GRASP, SYNFLOW, RANDOM_PRUNE, CHANNEL, NM, DATA_DIET, WANDA, SPARSEGPT):
    declare(_spec, "prune")

DROP_CRITERIA = ("bi", "angular", "last", "finercut")


def _drop_counts(params: Params, cfg: dict) -> None:
    if params["drop.criterion"] == "finercut" and params["drop.sublayers"] is None:
        raise UserError("drop.criterion=finercut removes sublayers: set drop.sublayers=<k>")
    if params["drop.criterion"] != "finercut" and params["drop.sublayers"] is not None:
        raise UserError(f"drop.sublayers is FinerCut's count; drop.criterion={params['drop.criterion']} removes "
                        f"drop.blocks whole blocks")


LAYER_DROP = Spec("layer_drop", [
    Param("from", "run", None, "the language-model run to make shallower (model=gpt or model=hf)", optional=True),
    Param("drop.criterion", "choice", "bi", "bi (ShortGPT block influence) | angular (Gromov et al., consecutive "
          "blocks) | last (the baseline) | finercut (single attention/MLP sublayers, greedily)",
          choices=DROP_CRITERIA),
    Param("drop.blocks", "int", 1, "whole blocks removed (bi, angular, last)", low=1),
    Param("drop.sublayers", "int", None, "attention or MLP sublayers removed (finercut)", low=1, optional=True),
    Param("drop.batch_size", "int", 16, "calibration sequences per forward pass while scoring", low=1),
], check=_drop_counts, extends=(CALIB,),
    doc="Remove transformer blocks or sublayers chosen on calibration data.")

declare(LAYER_DROP, "prune", check=True)
