"""Where a starting model, a teacher or a student comes from, shared by the tune and distill families.

A model is named by a finished run (`<run dir>` or `<run dir>@level_<L>`, loaded with
`store.load.load_run_model`, masks included), or built from a nested config and trained inline
(`teacher.model=cnn1d teacher.train.epochs=30`). Inline phases are saved as checkpoints of the
run, so a resumed run never trains them twice.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Callable

import torch
from torch import nn

from overparam.errors import UserError
from overparam.models.paths import replace_module
from overparam.settings import plain


def _deep_merge(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` laid over it, mappings merged key by key, any other value replaced."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def model_config(spec, default, models: Mapping[str, dict] | None = None) -> dict:
    """A model config (plain dict): `spec` as a mapping laid over `default`, as a name of one of `models`
    (configs/model/<name>.yaml, read by the CLI: `context.models`), or `default` when null."""
    if spec is None:
        return plain(default)
    if isinstance(spec, str):
        if spec not in (models or {}):
            raise UserError(f"model {spec!r}: a model named by its configs/model file is read by the runner "
                            f"(runner train), not here; give its config as a mapping")
        return plain(models[spec])
    if isinstance(spec, Mapping):
        spec = plain(spec)
        return _deep_merge(plain(default), spec) if spec.get("_target_") is None else spec
    raise UserError(f"a model must be a name or a config mapping, got {spec!r}")


def merged(base, overrides) -> dict:
    """`base` (train/optim settings) as a plain dict, with the keys set in `overrides` replaced."""
    base = plain(base)
    if not overrides:
        return base
    chosen = {k: v for k, v in plain(overrides).items() if v is not None}
    # Training length is one of steps/epochs: setting one clears the other.
    if "steps" in chosen and "epochs" in base:
        chosen.setdefault("epochs", None)
    if "epochs" in chosen and "steps" in base:
        chosen.setdefault("steps", None)
    return _deep_merge(base, chosen)


def load_from_run(ref: str, setup) -> nn.Module:
    """The model of a finished run, on the setup's device, with a new head if the class count differs."""
    from overparam.store.load import RunRef, load_run_model, saved_config

    parsed = RunRef.parse(str(ref))
    source = saved_config(parsed.root)
    same_data = (source.get("dataset") or {}).get("name") == setup.settings.dataset.name
    model, _ = load_run_model(parsed, device=setup.device, data=setup.data if same_data else None,
                              data_dir=(setup.settings.get("paths") or {}).get("data_dir"))
    head = output_head(model)
    if setup.data.bytes_per_token:
        # A language model keeps its head: a vocabulary padded past the tokenizer's is fine, a smaller one is not.
        if head.out_features < setup.data.num_classes:
            raise UserError(f"{ref}: the model's vocabulary has {head.out_features} tokens, the text here "
                            f"{setup.data.num_classes}; use the same tokenizer (dataset.tokenizer) as the run")
    elif head.out_features != setup.data.num_classes:
        replace_head(model, setup.data.num_classes, seed=int(setup.settings.seed))
    return model.to(setup.device)


def source_fields(ref: str) -> dict:
    """What a run started from, for its summary: `source_method`, `source_sparsity`, `source_pattern` of the
    run `ref` names, so that a table or a claim can tell apart runs that differ only in `from=` (the repair
    of the Wanda run from the repair of the SparseGPT one)."""
    from overparam.store.load import RunRef, saved_config

    source = saved_config(RunRef.parse(str(ref)).root)
    method = source.get("method")
    prune = source.get("prune")
    return {"source_method": method.get("name") if isinstance(method, Mapping) else method,
            "source_sparsity": source.get("sparsity"),
            "source_pattern": prune.get("pattern") if isinstance(prune, Mapping) else None}


def output_head(model: nn.Module) -> nn.Linear:
    """The classifier layer (`output_layer_name`)."""
    from overparam.models import output_layer_name

    return model.get_submodule(output_layer_name(model))


def replace_head(model: nn.Module, out_features: int, seed: int) -> nn.Linear:
    """Swap the classifier for a freshly initialized Linear with `out_features` outputs (seeded)."""
    from overparam.models import output_layer_name

    name = output_layer_name(model)
    old = model.get_submodule(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) + 104729)
        new = nn.Linear(old.in_features, out_features, bias=old.bias is not None,
                        device=old.weight.device, dtype=old.weight.dtype)
    replace_module(model, name, new)
    return new


def cached_phase(run, name: str, model: nn.Module, train: Callable[[], dict]) -> dict:
    """Run `train()` (which trains `model` and returns figures) once; a resumed run reloads both."""
    key = f"phase_{name}"
    phase = run.phase(name) if run is not None else None
    if phase is not None and key in run.info and phase.saved:
        model.load_state_dict(phase.load())
        return dict(run.info[key])
    figures = train()
    if phase is not None:
        phase.save(model.state_dict())
        run.record(key, figures)
    return figures


def obtain_model(role_cfg, setup, run, role: str, *, seed_offset: int = 0, loss_fn: Callable | None = None,
                 models: Mapping[str, dict] | None = None) -> tuple[nn.Module, dict]:
    """(model, figures) for a teacher/student/guide block {from, model, train, optim, untrained}.

    `from` names a run; otherwise a model of `model` (default: the run's model; a name: one of `models`,
    `context.models`) is built with seed
    `seed + seed_offset` and, unless `untrained`, trained inline with the block's train/optim keys
    layered over the run's (checkpoint `<role>`, so a resumed run does not train it again).
    """
    from overparam.engine import fit
    from overparam.engine.evaluate import evaluate_splits
    from overparam.models import build_model

    role_cfg = role_cfg or {}
    if role_cfg.get("from"):
        model = load_from_run(role_cfg["from"], setup)
        figures = {f"{split}_accuracy": m["accuracy"] for split, m in evaluate_splits(model, setup.data).items()}
        return model, figures
    settings = setup.settings
    seed = int(settings.seed) + seed_offset
    model = build_model(model_config(role_cfg.get("model"), settings.model, models), setup.data.input_shape,
                        setup.data.num_classes, seed=seed).to(setup.device)
    if role_cfg.get("untrained"):
        figures = {f"{split}_accuracy": m["accuracy"] for split, m in evaluate_splits(model, setup.data).items()}
        return model, figures

    def train() -> dict:
        kwargs = setup.fit_kwargs(train=merged(settings.train, role_cfg.get("train")),
                                  optim=merged(settings.optim, role_cfg.get("optim")), seed=seed)
        if loss_fn is not None:
            kwargs["loss_fn"] = loss_fn
        # run=None: an inline phase is resumed as a whole (its checkpoint), and its metrics do not
        # interleave with the main phase's rows in metrics.jsonl; its figures go to the summary.
        result = fit(model, setup.data, None, tag=role, label=role, **kwargs)
        return {k: v for k, v in result.flat().items() if isinstance(v, (int, float))}

    return model, cached_phase(run, role, model, train)


def frozen(model: nn.Module) -> nn.Module:
    """`model` in eval mode with gradients off (a teacher or guide: its parameters never change)."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def clone(model: nn.Module) -> nn.Module:
    """A deep copy (independent parameters)."""
    return copy.deepcopy(model)
