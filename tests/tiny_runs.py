"""Overrides for a tiny training run (a 16-unit MLP, a few steps), shared by every test folder.

A module of its own: every test folder has a `conftest.py`, so `from conftest import ...` would
take whichever folder's conftest pytest imported first, and `tests` is not a package, so
`from tests.x import ...` works only when the checkout happens to be on `sys.path`.
"""

from __future__ import annotations


def tiny(steps: int = 20, *extra: str, eval_every: int | None = None, batch_size: int | None = 64,
         width: int | None = 16) -> list[str]:
    """Overrides for a run of `steps` optimizer steps, evaluated every `eval_every` (default: once, at the
    end), on a `width`-unit MLP (None: the config's model) with `batch_size` (None: the config's), then `extra`."""
    overrides = ["train.epochs=null", f"train.steps={steps}", f"train.eval_every={eval_every or steps}"]
    if width is not None:
        overrides.insert(0, f"model.widths=[{width}]")
    if batch_size is not None:
        overrides.append(f"train.batch_size={batch_size}")
    return overrides + list(extra)


TINY = tiny(20)
