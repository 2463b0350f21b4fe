"""`method=kd`: knowledge distillation (Hinton et al. 2015).

student loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE.
The teacher (a run, or trained inline) is frozen: eval mode, no gradients, logits computed once per
dataset when the data is not augmented. `student.from=<imp run>@level_<L>` distills into a lottery
ticket and keeps its mask (masked layers train only their unmasked weights); `+prune=imp` prunes
while distilling (IMP's levels, each trained on this loss).
"""

from __future__ import annotations

from overparam.engine import fit
from overparam.errors import UserError
from overparam.recipes.common import model_summary
from overparam.recipes.distill.losses import TeacherLogits, WeightedTerms, ce_term, kd_term
from overparam.recipes.shared.source import cached_phase, frozen, load_from_run, obtain_model, output_head


def kd_loss(teacher, setup, *, alpha: float, temperature: float):
    """(loss_fn for `fit`, its WeightedTerms): alpha*KD + (1-alpha)*CE against the frozen `teacher`."""
    data = setup.data
    outputs = output_head(teacher).out_features
    # A language model's vocabulary may be padded past its tokenizer's; student and teacher must still agree.
    if outputs != data.num_classes and not (data.bytes_per_token and outputs > data.num_classes):
        raise UserError(f"the teacher predicts {output_head(teacher).out_features} classes, "
                        f"the data has {data.num_classes}")
    terms = WeightedTerms({"kd": alpha, "ce": 1.0 - alpha})
    teacher_logits = TeacherLogits(frozen(teacher), data) if terms.active("kd") else None

    def loss_fn(model, x, y, step, index):
        logits = model(x)
        values = {}
        if terms.active("kd"):
            values["kd"] = kd_term(logits, teacher_logits(x, index), temperature)
        if terms.active("ce"):
            values["ce"] = ce_term(logits, y)
        return terms.combine(values)

    return loss_fn, terms


def distill(student, teacher, setup, run, *, alpha: float, temperature: float, tag: str, level=None, **overrides):
    """Train `student` on alpha*KD + (1-alpha)*CE against the frozen `teacher`; returns fit's result."""
    loss_fn, terms = kd_loss(teacher, setup, alpha=alpha, temperature=temperature)
    return fit(student, setup.data, run, tag=tag, label=tag, level=level, loss_fn=loss_fn,
               on_eval=terms.on_eval(run, level), **setup.fit_kwargs(**overrides))


def new_student(source, setup):
    """The student: from a run (`student.from`, masks kept) or freshly initialized from the run's seed."""
    return load_from_run(source, setup) if source else setup.new_model()


def teacher_figures(teacher, figures: dict) -> dict:
    """Teacher columns for the summary."""
    from overparam.models import count_parameters

    out = {f"teacher_{k}": v for k, v in figures.items() if k.endswith("_accuracy") and "early_stop" not in k}
    out["teacher_parameters"] = count_parameters(teacher)
    return out


def run(params, context) -> dict:
    """Distill the teacher into the student; optionally also train the student alone (`kd.baseline`)."""
    settings, run = context.settings, context.run
    setup = context.prepare()
    teacher, figures = obtain_model(params["teacher"].tree(), setup, run, "teacher", seed_offset=1,
                                    models=context.models)
    frozen(teacher)
    if (settings.get("prune") or {}).get("with"):
        return {**prune_while_distilling(params, context, setup, teacher), **teacher_figures(teacher, figures)}
    student = new_student(params["student.from"], setup)
    result = distill(student, teacher, setup, run, alpha=params["kd.alpha"],
                     temperature=params["kd.temperature"], tag="kd")
    run.save_checkpoint("model", student.state_dict())
    summary = {**result.flat(), **model_summary(student), "steps": result.steps, **teacher_figures(teacher, figures)}
    summary.update(_sparsity(student))
    if params["kd.baseline"]:
        scratch = new_student(params["student.from"], setup)

        def train_alone() -> dict:
            alone = fit(scratch, setup.data, None, tag="scratch", label="scratch", **setup.fit_kwargs())
            return {k: v for k, v in alone.flat("scratch_").items() if isinstance(v, (int, float))}

        summary.update(cached_phase(run, "scratch", scratch, train_alone))
    return summary


def _sparsity(model) -> dict:
    from overparam.models.masked import masked_modules, sparsity_report

    if not masked_modules(model):
        return {}
    report = sparsity_report(model)
    return {"sparsity": report["sparsity"], "remaining_fraction": 1.0 - report["sparsity"]}


def prune_while_distilling(params, context, setup, teacher) -> dict:
    """`method=kd +prune=imp`: IMP's levels (prune.*, rewind, sparsity), every level trained on the KD loss.

    The shared lineage driver (`lottery.run_lottery`) takes the loss and IMP's own typed parameters (its Spec,
    parsed from the config `+prune=imp` composed); its levels land in `<run>/level_<L>/` and the summary
    has the usual `levels` rows. No level cache: its entries are plain IMP lineages.
    """
    from overparam.methods import methods
    from overparam.recipes.shared import lottery

    settings = context.settings
    if str(settings.prune.get("with")) != "imp":
        raise UserError(f"prune.with={settings.prune.get('with')!r}: only imp can be combined with kd")
    if params["student.from"]:
        raise UserError("student.from and +prune=imp exclude each other: IMP starts from the rewind point")
    imp_params = methods()["imp"].spec.parse(settings.to_dict())
    if str(imp_params.control) != "none":
        raise UserError("kd +prune=imp trains the ticket lineage only (control=none)")
    loss_fn, _ = kd_loss(teacher, setup, alpha=params["kd.alpha"], temperature=params["kd.temperature"])
    return lottery.run_lottery(imp_params, context, setup=setup, loss_fn=loss_fn)
