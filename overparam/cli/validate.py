"""Checks of a composed config before anything runs: one clear line for each bad value.

The keys every run shares are declared in `overparam.specs.SHARED`, each method's own in its family's
`params.py`; both are checked here before a run directory is written.
"""

from __future__ import annotations

from overparam.checks import get
from overparam.errors import UserError
from overparam.specs import SHARED


def validate(cfg: dict, trust: bool | None = None) -> None:
    """Validate the keys every run uses, then the method's own keys (its Spec)."""
    SHARED.validate(cfg)
    from overparam.hardware import check_threads

    check_threads(get(cfg, "hardware.threads"))
    method = get(cfg, "method") or {}
    if not isinstance(method, dict) or not (method.get("_target_") or method.get("name")):
        raise UserError("method is missing: the method config must name its recipe")
    import sys

    from overparam.components import resolve
    from overparam.methods import method_name
    from overparam.specs import spec_for

    recipe = resolve("method", method, trust=trust)
    check_inputs_read(cfg, method_name(method))
    from overparam.store.load import RUN_KEYS, check_run_ref

    for key in RUN_KEYS:
        value = get(cfg, key)
        if value not in (None, ""):
            check_run_ref(value, key, trust=trust)
    spec = spec_for(method_name(method))
    if spec is not None:
        spec.validate(cfg)
        return
    # A component of the user's own (--trust or registered in code) may bring its own `validate(cfg)`.
    own = getattr(sys.modules.get(getattr(recipe, "__module__", ""), None), "validate", None)
    if own is not None:
        own(cfg)


# Top-level keys train.yaml declares for every method (so `-m method=uniform_soup,greedy_soup ingredients=...`
# composes) that only the methods declaring them read.
METHOD_INPUTS = ("ingredients", "base")


def check_inputs_read(cfg: dict, name: str | None) -> None:
    """Refuse `ingredients=`/`base=` set for a method that does not read them, as an unread `+key` is refused:
    `runner train ingredients=<sweep>` would otherwise train a dense model and ignore the runs."""
    from overparam.specs import all_specs, spec_for

    spec = spec_for(name)
    if spec is None:  # a component of the user's own: it may read whatever it likes
        return
    for key in METHOD_INPUTS:
        if cfg.get(key) in (None, "", []) or any(p.key == key for p in spec.all_params()):
            continue
        readers = sorted(n for n, s in all_specs().items() if any(p.key == key for p in s.all_params()))
        raise UserError(f"{key} is set, but method={name} does not read it; methods that read {key}: "
                        f"{', '.join(readers)}")
