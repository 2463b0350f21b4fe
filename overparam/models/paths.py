"""Modules of a model by dotted path: look one up, swap one for another, list those of a type.

The one place that walks `named_modules` to find or replace a layer: masking (`masked.sparsify`),
adapters (`tune/lora`), sparse fine-tuning and head swaps all go through `replace_module`.
"""

from __future__ import annotations

from torch import nn

from overparam.errors import UserError

ROOT = (".", "")  # paths that name the model itself


def submodule(model: nn.Module, path: str, what: str = "the model") -> nn.Module:
    """The module at dotted `path` (`.` or `` = `model` itself); an unknown path is a UserError naming a few valid ones."""
    if path in ROOT:
        return model
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        raise UserError(f"{what} has no module {path!r}; its modules are: {shown or '(none)'}") from None


def replace_module(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Put `new` at dotted `path` of `model` (in place); returns the module it replaces."""
    if path in ROOT:
        raise ValueError("cannot replace the root module; wrap it in a container first")
    parent_path, _, child = path.rpartition(".")
    parent = submodule(model, parent_path)
    old = submodule(model, path)
    setattr(parent, child, new)
    return old


def modules_of_type(model: nn.Module, types: type | tuple[type, ...], exact: bool = False
                    ) -> list[tuple[str, nn.Module]]:
    """(path, module) of every module that is an instance of `types` (`exact`: whose type is one of them),
    in registration order; a list, so the caller may replace what it gets while going through it."""
    wanted = types if isinstance(types, tuple) else (types,)
    return [(name, module) for name, module in model.named_modules()
            if (type(module) in wanted if exact else isinstance(module, wanted))]
