"""The distill family's parameters (kd, self_distill, feature_kd, random_teacher). Torch-free."""

from __future__ import annotations

from overparam.errors import UserError
from overparam.methods import declare
from overparam.params import Param, Params, Spec
from overparam.specs import OPTIMIZERS

FEATURE_DISTANCES = ("linear", "cka")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _teacher(role: str) -> Spec:
    """The guide/teacher block kd and feature_kd share: a finished run, or one trained inline."""
    return Spec(f"{role}_block", [
        Param("teacher.from", "run", None, f"the {role}: a finished run (<dir> or <dir>@level_<L>); null: build one "
              "inline", optional=True),
        Param("teacher.model", "any", None, f"inline {role}'s model: a configs/model name or a mapping; null: the "
              "run's model", optional=True),
        Param("teacher.train.steps", "int", None, f"inline {role}'s train.steps (null: the run's)", low=0,
              low_open=True, optional=True),
        Param("teacher.train.epochs", "float", None, f"inline {role}'s train.epochs (null: the run's)", low=0,
              low_open=True, optional=True),
        Param("teacher.train.batch_size", "int", None, f"inline {role}'s train.batch_size (null: the run's)", low=1,
              optional=True),
        Param("teacher.optim.name", "choice", None, f"inline {role}'s optimizer (null: the run's)",
              choices=OPTIMIZERS, optional=True),
        Param("teacher.optim.lr", "float", None, f"inline {role}'s learning rate (null: the run's)", low=0.0,
              optional=True),
        Param("teacher.optim.weight_decay", "float", None, f"inline {role}'s weight decay (null: the run's)",
              low=0.0, optional=True),
        Param("teacher.untrained", "bool", False, f"use the inline {role} at its random initialization"),
        Param("student.from", "run", None, "start the student from a run (masks kept); null: fresh init",
              optional=True),
    ])


def _kd_terms(alpha: float) -> Spec:
    """kd.temperature and kd.alpha (born-again networks default to alpha=1)."""
    return Spec("kd_terms", [
        Param("kd.temperature", "float", 4.0, "softmax temperature T of the KD term (scaled by T^2)", low=0.0,
              low_open=True),
        Param("kd.alpha", "float", alpha, "weight of the KD term; (1 - alpha) goes to cross-entropy", low=0.0,
              high=1.0),
    ])


def _prune_inside(params: Params, cfg: dict) -> None:
    """+prune=imp: IMP's own checks of its keys."""
    if (cfg.get("prune") or {}).get("with") == "imp":
        from overparam.methods import methods

        methods()["imp"].spec.validate(cfg)


def _layer_pairs(params: Params, cfg: dict) -> None:
    for pair in params["feature_kd.layers"] or ():
        if not isinstance(pair, str) or pair.count(":") != 1:
            raise UserError(f"feature_kd.layers entries are 'student_path:guide_path', got {pair!r}")


KD = Spec("kd", [
    Param("kd.baseline", "bool", False, "also train the same student alone and report scratch_* figures"),
], check=_prune_inside, extends=(_kd_terms(0.9), _teacher("teacher")),
    doc="Knowledge distillation from a frozen teacher's softened outputs.")

SELF_DISTILL = Spec("self_distill", [
    Param("self_distill.generations", "int", 2, "student generations after generation 0", low=1),
], extends=(_kd_terms(1.0),), doc="Self-distillation (born-again networks).")

FEATURE_KD = Spec("feature_kd", [
    Param("feature_kd.layers", "list", None, "layer pairs 'student_path:guide_path'; null: [embedding:embedding]",
          items="'student_path:guide_path' pairs", optional=True),
    Param("feature_kd.distance", "choice", "linear", "linear: MSE after a learned map | cka: 1 - linear CKA",
          choices=FEATURE_DISTANCES),
    Param("feature_kd.weight", "float", 1.0, "weight of the summed feature distances", low=0.0),
    Param("feature_kd.task_weight", "float", 1.0, "weight of the student's cross-entropy with the labels", low=0.0),
], check=_layer_pairs, extends=(_teacher("guide"),),
    doc="Feature guidance: match layers' representations to a frozen guide's.")

RANDOM_TEACHER = Spec("random_teacher", [
    Param("random_teacher.hidden", "list", [512, 512], "projection head's MLP widths", item=_positive_int,
          items="positive integers (widths)"),
    Param("random_teacher.bottleneck", "int", 64, "L2-normalized bottleneck width", low=1),
    Param("random_teacher.out_dim", "int", 4096, "softmax size of the head", low=1),
    Param("random_teacher.teacher_temperature", "float", 1.0, "teacher softmax temperature", low=0.0,
          low_open=True),
    Param("random_teacher.student_temperature", "float", 1.0, "student softmax temperature", low=0.0,
          low_open=True),
    Param("random_teacher.center_momentum", "float", None, "momentum of the teacher's running center; null: none",
          low=0.0, high=1.0, high_open=True, optional=True),
    Param("random_teacher.views", "int", 1, "views per input (1: same view; 2: cross views)", low=1, high=2),
    Param("random_teacher.shift", "int", 0, "view augmentation: translation by up to this many positions", low=0),
    Param("random_teacher.noise", "float", 0.0, "view augmentation: Gaussian noise std", low=0.0),
    Param("random_teacher.student_init_noise", "float", None, "null: own init; a number: the teacher's weights plus "
          "noise of this relative size", low=0.0, optional=True),
    Param("random_teacher.probe_epochs", "float", 10, "epochs of linear-probe training", low=0.0, low_open=True),
], doc="Random teachers: distill a frozen random-init teacher, then linear probes.")

for _spec in (KD, SELF_DISTILL, FEATURE_KD, RANDOM_TEACHER):
    declare(_spec, "distill")
