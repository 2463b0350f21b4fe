"""`FeatureTap`: a model's intermediate features by module path and `input|output`, via forward hooks.

As torchdistill's forward-hook "io" spec: a point is (module path, "input" or "output"); `.` is
the model itself. A loss reads features without editing any model's `forward`:

    with FeatureTap(model, [("fc_out", "input"), ("layer3.1", "output")]) as tap:
        logits = model(x)
        embedding = tap["fc_out", "input"]

Each forward overwrites the values of the last one; `clear()` drops them; leaving the context
(or `remove()`) takes the hooks off the model. Values are the tensors themselves, not copies: a
module after the point that works in place (`ReLU(inplace=True)`) changes them.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from overparam.errors import UserError
from overparam.models.paths import submodule

IO = ("input", "output")


def embedding_point(model: nn.Module) -> tuple[str, str]:
    """The point of a zoo model's embedding: the input of its classifier layer."""
    from overparam.models.registry import output_layer_name

    return output_layer_name(model), "input"


class FeatureTap:
    """Records, at every forward of `model`, the input or output of the modules named by `points`."""

    def __init__(self, model: nn.Module, points: Iterable[tuple[str, str]], what: str = "the model"):
        self.points = [(str(path), str(io)) for path, io in points]
        self.values: dict[tuple[str, str], torch.Tensor] = {}
        self._handles = []
        modules = {}
        for path, io in self.points:  # every point is checked before any hook goes on
            if io not in IO:
                raise UserError(f"a feature tap takes a module's input or output, not {io!r} (at {path!r})")
            modules[path] = submodule(model, path, what)
        for path, io in dict.fromkeys(self.points):
            module = modules[path]
            if io == "input":  # as the module receives it, other pre-hooks applied
                self._handles.append(module.register_forward_pre_hook(self._input_saver(path, module)))
            else:
                self._handles.append(module.register_forward_hook(self._output_saver(path, module)))

    # A deep copy of a tapped model carries these hooks along; `module is target` keeps the copy's
    # forwards out of this tap.
    def _input_saver(self, path: str, target: nn.Module):
        def save(module, inputs):
            if module is target:
                self.values[(path, "input")] = inputs[0] if len(inputs) == 1 else inputs
        return save

    def _output_saver(self, path: str, target: nn.Module):
        def save(module, inputs, output):
            if module is target:
                self.values[(path, "output")] = output
        return save

    def __getitem__(self, point: tuple[str, str]) -> torch.Tensor:
        try:
            return self.values[point]
        except KeyError:
            if point not in self.points:
                raise KeyError(f"{point!r} is not tapped; tapped: {self.points}") from None
            raise KeyError(f"{point!r} holds nothing: no forward since it was tapped or cleared") from None

    def pop(self, point: tuple[str, str]) -> torch.Tensor | None:
        """The value recorded at `point` since it was last taken (None if none), removed from the tap."""
        return self.values.pop(point, None)

    def clear(self) -> None:
        """Drop the recorded values (the hooks stay)."""
        self.values.clear()

    def remove(self) -> None:
        """Take the hooks off the model and drop the values; calling it twice is harmless."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.values.clear()

    close = remove

    def __enter__(self) -> "FeatureTap":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
