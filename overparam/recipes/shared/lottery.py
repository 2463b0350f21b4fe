"""The pruning lineage driver IMP, one-shot and `kd +prune=imp` share: a plan of levels, each trained,
pruned by magnitude and rewound; the lottery-ticket controls on the same levels (rows of CONTROL_COUNTS).

Level L keeps round(N * (1 - rate)^L) of the N prunable weights; the last level prunes exactly to
`sparsity`. Levels are therefore a prefix sequence independent of the target, and a sparsity sweep
shares them through a level cache (`store.levels.LevelCache`) keyed by the config without `sparsity`.
Each level trains through `engine.fit` with `tag=level_<L>` (so it resumes on its own) and is stored
as `<run>/level_<L>/`; a complete level is never recomputed. The methods themselves: prune/imp.py
and prune/oneshot.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from overparam.engine.progress import plain_line
from overparam.errors import UserError
from overparam.recipes.shared import prunable as common
from overparam.recipes.shared.choices import parse_rewind
from overparam.recipes.shared.masks import distribution_counts, random_masks, select_masks
from overparam.recipes.shared.level_stats import level_row, mask_statistics, print_level_table
from overparam.store.levels import LevelCache, record_level_lineage

# --- the plan of levels ---------------------------------------------------------------------------

@dataclass
class Plan:
    """Kept weight counts per level and whether each level is canonical (shared by a sparsity sweep)."""

    counts: list[int]
    canonical: list[bool]

    @property
    def levels(self) -> int:
        return len(self.counts)


def plan_levels(total: int, rate: float, sparsity: float, oneshot: bool = False) -> Plan:
    """Level 0 is dense; level L keeps round(total * (1-rate)^L); the last level keeps exactly the target.

    Canonical counts never depend on the target (each is also forced strictly below the previous one,
    so a tiny layer cannot stall), which is what lets jobs of a sparsity sweep share them.
    """
    target = common.target_count(total, sparsity)
    counts, canonical = [total], [True]
    if oneshot:
        if target < total:
            counts.append(target)
            canonical.append(False)
        return Plan(counts, canonical)
    level = 0
    while counts[-1] > target:
        level += 1
        nominal = min(int(math.floor(total * (1.0 - rate) ** level + 0.5)), counts[-1] - 1)
        if nominal > target:
            counts.append(nominal)
            canonical.append(True)
        else:
            counts.append(target)
            canonical.append(nominal == target)
    return Plan(counts, canonical)


# --- one lottery run ------------------------------------------------------------------------------

@dataclass
class Lottery:
    """Everything a level needs: the shared settings, the data, the pruning settings and the training settings.

    `loss_fn` (a `fit` loss_fn; None: cross-entropy) is what every level trains on (`kd +prune=imp`
    passes its distillation loss).
    """

    settings: Any
    setup: Any
    rate: float | None
    scope: str
    output_rate: float
    rewind: str
    rewind_kind: str
    rewind_amount: int
    retrain_schedule: str
    oneshot: bool
    sparsity: float
    exclude_output: bool
    steps_per_epoch: int = 0
    total_steps: int = 0
    sources: dict = field(default_factory=dict)
    loss_fn: Callable | None = None

    @classmethod
    def from_params(cls, params, settings, setup, oneshot: bool, loss_fn: Callable | None = None) -> "Lottery":
        """The lineage settings from the method's typed `params` (prune.*, rewind, retrain.*); `settings` gives
        the shared keys (seed, sparsity, train, optim). One-shot has no `prune.rate`: its plan is a single step."""
        from overparam.engine.optim import total_steps

        kind, amount = parse_rewind(params.rewind)
        output_rate = params["prune.output_rate"]
        lottery = cls(settings=settings, setup=setup, rate=params.get("prune.rate"), scope=params["prune.scope"],
                      output_rate=output_rate, rewind=params.rewind, rewind_kind=kind, rewind_amount=amount,
                      retrain_schedule=params["retrain.lr_schedule"], oneshot=oneshot,
                      sparsity=float(settings.sparsity), exclude_output=output_rate == 0.0, loss_fn=loss_fn)
        lottery.total_steps, lottery.steps_per_epoch = total_steps(settings.train, len(setup.data.train_x))
        return lottery

    @property
    def seed(self) -> int:
        return int(self.settings.seed)

    def fresh_model(self, seed: int | None = None) -> torch.nn.Module:
        """A newly initialized model (the run's seed unless given) with all-one masks."""
        return common.make_prunable(self.setup.new_model(seed), exclude_output=self.exclude_output)

    @property
    def rewind_step(self) -> int:
        """The step whose weights pruned levels restart from (0 for init)."""
        if self.rewind_kind == "it":
            step = self.rewind_amount
        elif self.rewind_kind == "ep":
            step = self.rewind_amount * self.steps_per_epoch
        else:
            return 0
        if step >= self.total_steps:
            raise UserError(f"rewind={self.rewind} is step {step}, not before the end of training "
                            f"({self.total_steps} steps)")
        return step

    def retrain_optim(self) -> Any:
        """The optimizer config of a pruned level under rewind=none (ft: last LR; lrw: same; clr: warm-up + decay)."""
        from overparam.engine.optim import lr_at

        optim = self.settings.optim.to_dict()
        if self.rewind_kind != "none" or self.retrain_schedule == "lrw":
            return optim
        if self.retrain_schedule == "ft":
            last = lr_at(self.total_steps - 1, self.total_steps, optim)
            return {**optim, "lr": last, "schedule": "constant", "warmup_steps": 0}
        # clr: one cycle, linear warm-up over the first 10% to the base LR, then linear decay to zero.
        return {**optim, "schedule": "linear", "warmup_steps": max(1, round(0.1 * self.total_steps))}

    def masks_after(self, state: dict[str, torch.Tensor], model: torch.nn.Module, keep: int
                    ) -> dict[str, torch.Tensor]:
        """Magnitude masks keeping `keep` weights of a trained level's `state` (pruned weights stay pruned)."""
        names = common.weight_names(model)
        scores = {name: state[name].abs() for name in names}
        alive = {name: state[f"{name}_mask"] for name in names}
        # oneshot: a single step to `sparsity`; IMP: the output layer by the per-round law of prune.rate.
        return select_masks(scores, keep, scope=self.scope, output_name=common.output_weight_name(model),
                            output_rate=self.output_rate, alive=alive,
                            **({"sparsity": self.sparsity} if self.oneshot else {"rate": self.rate}))


def train_level(lottery: Lottery, run, level: int, model: torch.nn.Module, *, start_step: int = 0, optim=None,
                step_hook: Callable | None = None, label: str | None = None) -> dict:
    """Train one level through `engine.fit` (tag `level_<L>`) and commit it as the run's phase `level_<L>`."""
    from overparam.engine import fit

    phase = run.level(level)
    # Either slot may hold the newest intact resume point (a kill between a slot's rename and run.json's
    # update spoils the other): fit resumes from it and keeps exactly the rows up to its step; without
    # one, the rows of an interrupted earlier attempt at this level are dropped.
    phase.begin()
    kwargs = lottery.setup.fit_kwargs(**({} if optim is None else {"optim": optim}))
    if lottery.loss_fn is not None:
        kwargs["loss_fn"] = lottery.loss_fn
    # start_step > 0 (late rewinding): the level trains steps N..T of the schedule, as if resumed at N.
    result = fit(model, lottery.setup.data, run, tag=phase.name, level=level, label=label or phase.name,
                 step_hook=step_hook, start_step=start_step, **kwargs)
    summary = {"level": level, **mask_statistics(model, lottery.setup.data.input_shape, lottery.setup.device),
               **result.flat(), "steps": result.steps}
    return phase.commit(model, summary)


def _load_into(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model.load_state_dict(state)
    return model


class Lineage:
    """The magnitude-pruning levels of one config, stored in `run` and shared through `cache`."""

    def __init__(self, lottery: Lottery, run, plan: Plan, cache: LevelCache):
        self.lottery = lottery
        self.run = run
        self.plan = plan
        self.cache = cache
        self.sources: dict[int, str] = {}

    def ensure(self, level: int):
        """Level `level` complete in the run (its store Phase): already there, taken from the cache, or trained."""
        for earlier in range(level):
            if not self.run.level(earlier).complete:
                self.ensure(earlier)
        phase = self.run.level(level)
        if phase.complete:
            self.sources.setdefault(level, "run")
            return phase
        self.sources[level] = self.cache.obtain(
            level, phase, lambda: self._train(level), shared=self.plan.canonical[level],
            announce=lambda cached: plain_line(self.run, self._label(level), f"taken from the level cache {cached}"))
        return phase

    def mask(self, level: int, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The magnitude mask of `level` (from the trained level before it); level 0 is all ones."""
        if level == 0:
            return {name: torch.ones_like(w) for name, w in common.weights_of(model).items()}
        previous = self.run.level(level - 1).state()
        return self.lottery.masks_after(previous, model, self.plan.counts[level])

    def start_model(self, level: int, mask: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, int, Any]:
        """(model with `mask` installed, start step, optimizer config) of a pruned level, by the rewind rule."""
        lottery = self.lottery
        model = lottery.fresh_model()
        if lottery.rewind_kind in ("it", "ep"):
            _load_into(model, self.run.level(0).rewind_point())
            start = lottery.rewind_step
        elif lottery.rewind_kind == "none":
            _load_into(model, self.run.level(level - 1).state())
            start = 0
        else:
            start = 0
        common.apply_masks_by_name(model, mask)
        return model, start, lottery.retrain_optim()

    def _train(self, level: int) -> None:
        lottery = self.lottery
        if level == 0:
            model = lottery.fresh_model()
            hook = self._rewind_saver(model) if lottery.rewind_kind in ("it", "ep") else None
            train_level(lottery, self.run, 0, model, step_hook=hook, label=self._label(0))
            return
        model = lottery.fresh_model()
        mask = self.mask(level, model)
        model, start, optim = self.start_model(level, mask)
        train_level(lottery, self.run, level, model, start_step=start, optim=optim, label=self._label(level))

    def _rewind_saver(self, model: torch.nn.Module) -> Callable | None:
        """A step hook that stores the rewind point's weights once, with level 0 (`Phase.save_rewind_point`)."""
        step_wanted = self.lottery.rewind_step
        level_0 = self.run.level(0)

        def save(current: torch.nn.Module) -> None:
            level_0.save_rewind_point(current.state_dict())

        if step_wanted == 0:
            save(model)
            return None

        def hook(step, current, _optimizer):
            if step == step_wanted:
                save(current)

        return hook

    def _label(self, level: int) -> str:
        return f"level {level}/{self.plan.levels - 1} ({100.0 * self.plan.counts[level] / self.plan.counts[0]:.1f}%)"


def _ticket_counts(lottery: Lottery, ticket: Lineage, level: int, template, ticket_mask: dict,
                   distribution: str) -> dict:
    return {name: int(m.count_nonzero()) for name, m in ticket_mask.items()}


def _distribution_counts(lottery: Lottery, ticket: Lineage, level: int, template, ticket_mask: dict,
                         distribution: str) -> dict:
    keep = ticket.plan.counts[level]
    sparsity = 1.0 - keep / ticket.plan.counts[0]
    return distribution_counts(template, keep, distribution, lottery.output_rate, sparsity)


# control -> the per-layer counts of its random mask; None: the ticket's own mask on a fresh initialization.
CONTROL_COUNTS = {"random_reinit": None, "random_mask": _ticket_counts, "random_prune": _distribution_counts}


def _control_model(lottery: Lottery, ticket: Lineage, level: int, control: str,
                   distribution: str) -> tuple[torch.nn.Module, int, Any]:
    """The control network of `level`: its mask, its initial weights, start step and optimizer config."""
    template = lottery.fresh_model()
    ticket_mask = ticket.mask(level, template)
    shapes = {name: tuple(m.shape) for name, m in ticket_mask.items()}
    generator = torch.Generator().manual_seed(common.derived_seed(lottery.seed, control, level))
    counts = CONTROL_COUNTS[control]
    if counts is None:
        model = lottery.fresh_model(common.derived_seed(lottery.seed, control, level) % (2 ** 31))
        common.apply_masks_by_name(model, ticket_mask)
        return model, 0, None
    mask = random_masks(counts(lottery, ticket, level, template, ticket_mask, distribution), shapes, generator)
    return ticket.start_model(level, mask)


def _control_levels(lottery: Lottery, run, ticket: Lineage, control: str, distribution: str,
                    cache: LevelCache) -> dict[int, str]:
    """Train (or take from the cache) the control network at every level of the plan."""
    sources: dict[int, str] = {}
    plan = ticket.plan
    for level in range(plan.levels):
        phase = run.level(level)
        if phase.complete:
            sources[level] = "run"
            continue
        if level == 0 and control in ("random_mask", "random_prune"):
            # A random mask of the dense level is the dense mask: the control's level 0 is the ticket's.
            phase.adopt(ticket.ensure(0).path)
            sources[level] = "ticket"
            continue
        label = f"{control} level {level}/{plan.levels - 1}"

        def produce(level=level, label=label) -> None:
            ticket.ensure(max(level - 1, 0))  # level 0: the rewind point lives in the ticket's level 0
            model, start, optim = _control_model(lottery, ticket, level, control, distribution)
            train_level(lottery, run, level, model, start_step=start, optim=optim, label=label)

        sources[level] = cache.obtain(level, phase, produce, shared=plan.canonical[level],
                                      announce=lambda cached, label=label: plain_line(
                                          run, label, f"taken from the level cache {cached}"))
    return sources


def _cache(run, enabled: bool, *, drop: tuple[str, ...] = (), kind: str = "imp") -> LevelCache:
    """The run's level cache (keyed by its config without `sparsity` and `drop`), or none when disabled."""
    if not enabled:
        return LevelCache(None)
    return run.level_cache(kind, drop=drop)


def run_lottery(params, context, *, oneshot: bool = False, setup=None, loss_fn: Callable | None = None) -> dict:
    """The IMP/one-shot loop: levels to the target, controls on the same levels, a summary with `levels`.

    `params`: IMP's or one-shot's typed parameters (prune.*, rewind, retrain.*, control). `setup`: the
    prepared device and data (default: prepared here). `loss_fn`: what every level trains on instead of
    cross-entropy (kd +prune=imp); such levels are not shared through the level cache, whose entries are
    plain IMP lineages.
    """
    run = context.run
    setup = setup if setup is not None else context.prepare()
    lottery = Lottery.from_params(params, context.settings, setup, oneshot, loss_fn=loss_fn)
    lottery.rewind_step  # noqa: B018 - a rewind point past the end of training is a UserError before any work
    template = lottery.fresh_model()
    total = sum(w.numel() for w in common.weights_of(template).values())
    plan = plan_levels(total, lottery.rate, lottery.sparsity, oneshot=oneshot)
    control = str(params.get("control") or "none")  # one-shot has no controls
    caching = params["prune.cache"] and loss_fn is None
    ticket_cache = _cache(run, caching, drop=("control",))
    run.record("level_cache", str(ticket_cache.root) if ticket_cache.enabled else None)
    if control == "none":
        ticket = Lineage(lottery, run, plan, ticket_cache)
        for level in range(plan.levels):
            ticket.ensure(level)
        sources = ticket.sources
    else:
        # The ticket lineage of a control run lives in <run>/ticket/ (its own metrics and resume points).
        ticket_run = run.sub_run("ticket")
        ticket = Lineage(lottery, ticket_run, plan, ticket_cache)
        sources = _control_levels(lottery, run, ticket, control, params["prune.distribution"], _cache(run, caching))
        ticket_run.finish("done")
    levels = [level_row(run.level(level).summary()) for level in range(plan.levels)]
    record_level_lineage(run, run.root, plan.levels)
    last = run.level(plan.levels - 1)
    final = last.summary()
    summary = {k: v for k, v in final.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    summary.pop("level", None)
    summary["levels_count"] = plan.levels
    summary["control"] = control
    summary["levels"] = levels
    run.save_checkpoint("model", last.state())
    shown = [{**row, "source": sources.get(row["level"], "")} for row in levels]
    name = "one-shot" if oneshot else "IMP"
    print_level_table(shown, f"{name} {'ticket' if control == 'none' else control} levels -> "
                                    f"sparsity {lottery.sparsity} ({run.root})")
    return summary
