"""`method=kd`: knowledge distillation (Hinton et al. 2015).

student loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE.
The teacher (a run, or trained inline) is frozen: eval mode, no gradients, logits computed once per
dataset when the data is not augmented. `student.from=<imp run>@level_<L>` distills into a lottery
ticket and keeps its mask (masked layers train only their unmasked weights); `+prune=imp` prunes
while distilling (IMP's levels, each trained on this loss).
"""

from __future__ import annotations

from overparam.engine import fit
from overparam.engine.optim import total_steps
from overparam.errors import UserError
from overparam.recipes.common import model_summary, prepare
from overparam.recipes.distill.losses import TeacherLogits, WeightedTerms, ce_term, kd_term
from overparam.recipes.tune.source import cached_phase, frozen, load_from_run, obtain_model, output_head, steps_between_logs


def kd_loss(teacher, setup, *, alpha: float, temperature: float, train, seed: int):
    """(loss_fn for `fit`, its WeightedTerms): alpha*KD + (1-alpha)*CE against the frozen `teacher`."""
    data = setup.data
    if output_head(teacher).out_features != data.num_classes:
        raise UserError(f"the teacher predicts {output_head(teacher).out_features} classes, "
                        f"the data has {data.num_classes}")
    terms = WeightedTerms({"kd": alpha, "ce": 1.0 - alpha})
    _, steps_per_epoch = total_steps(train, len(data.train_x))
    teacher_logits = None
    if terms.active("kd"):
        teacher_logits = TeacherLogits(frozen(teacher), data, data_seed=int(seed),
                                       batch_size=int(train["batch_size"]), steps_per_epoch=steps_per_epoch)

    def loss_fn(model, x, y, step):
        logits = model(x)
        values = {}
        if terms.active("kd"):
            values["kd"] = kd_term(logits, teacher_logits(x, step), temperature)
        if terms.active("ce"):
            values["ce"] = ce_term(logits, y)
        return terms.combine(values)

    return loss_fn, terms


def distill(student, teacher, setup, run, *, alpha: float, temperature: float, tag: str, level=None, **overrides):
    """Train `student` on alpha*KD + (1-alpha)*CE against the frozen `teacher`; returns fit's result."""
    kwargs = setup.fit_kwargs(**overrides)
    train = kwargs["train"]
    loss_fn, terms = kd_loss(teacher, setup, alpha=alpha, temperature=temperature, train=train, seed=kwargs["seed"])
    total, _ = total_steps(train, len(setup.data.train_x))
    hook = terms.hook(run, steps_between_logs(train, len(setup.data.train_x)), total, level)
    return fit(student, setup.data, run, tag=tag, label=tag, level=level, loss_fn=loss_fn, step_hook=hook, **kwargs)


def new_student(cfg, setup):
    """The student: from a run (`student.from`, masks kept) or freshly initialized from the run's seed."""
    source = (cfg.get("student") or {}).get("from")
    return load_from_run(source, setup) if source else setup.new_model()


def teacher_figures(teacher, figures: dict) -> dict:
    """Teacher columns for the summary."""
    from overparam.models import count_parameters

    out = {f"teacher_{k}": v for k, v in figures.items() if k.endswith("_accuracy") and "early_stop" not in k}
    out["teacher_parameters"] = count_parameters(teacher)
    return out


def run(params, context) -> dict:
    """Distill the teacher into the student; optionally also train the student alone (`kd.baseline`)."""
    cfg, run = context.cfg, context.run
    setup = prepare(cfg)
    teacher, figures = obtain_model(cfg.teacher, setup, run, "teacher", seed_offset=1)
    frozen(teacher)
    if (cfg.get("prune") or {}).get("with"):
        return {**prune_while_distilling(cfg, run, setup, teacher), **teacher_figures(teacher, figures)}
    student = new_student(cfg, setup)
    result = distill(student, teacher, setup, run, alpha=float(cfg.kd.alpha),
                     temperature=float(cfg.kd.temperature), tag="kd")
    run.save_checkpoint("model", student.state_dict())
    summary = {**result.flat(), **model_summary(student), "steps": result.steps, **teacher_figures(teacher, figures)}
    summary.update(_sparsity(student))
    if cfg.kd.get("baseline"):
        scratch = new_student(cfg, setup)

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


def prune_while_distilling(cfg, run, setup, teacher) -> dict:
    """`method=kd +prune=imp`: IMP's levels (prune.*, rewind, sparsity), every level trained on the KD loss.

    The prune family's level machinery (`imp.Context`, `imp.Lineage`) trains each level through
    `setup.fit_kwargs()`; a setup whose fit_kwargs carry the KD loss makes every level a distillation.
    Levels land in `<run>/level_<L>/` and the summary has the usual `levels` rows.
    """
    from dataclasses import dataclass
    from typing import Callable

    from overparam.recipes.common import Setup
    from overparam.recipes.prune import common, imp
    from overparam.store.checkpoint import load_state

    if str(cfg.prune.get("with")) != "imp":
        raise UserError(f"prune.with={cfg.prune.get('with')!r}: only imp can be combined with kd")
    if (cfg.get("student") or {}).get("from"):
        raise UserError("student.from and +prune=imp exclude each other: IMP starts from the rewind point")
    if str(cfg.get("control") or "none") != "none":
        raise UserError("kd +prune=imp trains the ticket lineage only (control=none)")
    loss_fn, _ = kd_loss(teacher, setup, alpha=float(cfg.kd.alpha), temperature=float(cfg.kd.temperature),
                         train=cfg.train, seed=int(cfg.seed))

    @dataclass
    class DistillingSetup(Setup):
        loss: Callable | None = None

        def fit_kwargs(self, **overrides) -> dict:
            return {**super().fit_kwargs(**overrides), "loss_fn": self.loss}

    kd_setup = DistillingSetup(cfg=setup.cfg, device=setup.device, data=setup.data, loss=loss_fn)
    ctx = imp.Context.from_config(cfg, kd_setup, oneshot=False)
    ctx.rewind_step  # noqa: B018 - a rewind point past the end of training fails before any work
    template = ctx.fresh_model()
    total = sum(w.numel() for w in common.weights_of(template).values())
    plan = imp.plan_levels(total, ctx.rate, ctx.sparsity)
    # No level cache: the cache is keyed for plain IMP lineages, and these levels are distilled.
    lineage = imp.Lineage(ctx, run, plan, common.LevelCache(None))
    for level in range(plan.levels):
        lineage.ensure(level)
    levels = [common.level_row(run.level(level).summary()) for level in range(plan.levels)]
    common.record_level_lineage(run, run.root, plan.levels)
    final = run.level(plan.levels - 1).summary()
    summary = {k: v for k, v in final.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    summary.pop("level", None)
    summary.update({"levels_count": plan.levels, "levels": levels})
    run.save_checkpoint("model", load_state(run.level(plan.levels - 1).path / "model.safetensors"))
    return summary
