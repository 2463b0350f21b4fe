"""Any torchvision classification model by name (`arch`), with `num_classes` outputs.

Inputs other than ImageNet's 3x224x224 are handled as follows (limits are documented in
configs/model/torchvision.yaml):
- a channel count other than 3 replaces the first convolution by one with that many input
  channels (pretrained filters are summed over RGB for 1 channel, so a gray image replicated
  to RGB gives the same response; untrained filters keep the architecture's own init);
- `vit_*` without weights gets `image_size` set to the input's size (it must divide by the patch);
- `small_input_stem: true` (ResNet family only) swaps the 7x7/stride-2 stem and its max-pool
  for a 3x3/stride-1 conv, the usual CIFAR adaptation;
- the model is run once on zeros at build time, so an input it cannot take (e.g. inception_v3
  under 75x75) ends with one clear line instead of a failure mid-training.
torchvision is imported here only, inside the factory.
"""

from __future__ import annotations

import torch
from torch import nn

from overparam.errors import UserError
from overparam.models.common import image_shape
from overparam.models.paths import replace_module

# Models whose auxiliary heads change the training output to a tuple; the engine wants one tensor.
AUX_LOGIT_ARCHS = ("googlenet", "inception_v3")


def _classifier_name(model: nn.Module) -> str:
    """The layer producing the logits: the last Linear, or the last 1x1 Conv2d (squeezenet) if none."""
    last_linear = last_pointwise = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last_linear = name
        elif isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1):
            last_pointwise = name
    found = last_linear or last_pointwise
    if found is None:
        raise UserError("torchvision model: cannot find its classifier layer")
    return found


def _first_conv_name(model: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name
    return None


@torch.no_grad()
def _adapt_input_channels(model: nn.Module, channels: int, pretrained: bool, arch: str) -> None:
    name = _first_conv_name(model)
    if name is None:
        raise UserError(f"torchvision model {arch}: no Conv2d found to adapt to {channels} input channels")
    old: nn.Conv2d = model.get_submodule(name)
    if old.in_channels == channels:
        return
    if old.groups != 1:
        raise UserError(f"torchvision model {arch}: its first conv is grouped; give it 3-channel inputs")
    new = nn.Conv2d(channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
                    dilation=old.dilation, bias=old.bias is not None, padding_mode=old.padding_mode)
    if pretrained:
        # Sum over RGB so a gray image gives what its RGB replica gave; other counts share that sum.
        summed = old.weight.sum(dim=1, keepdim=True)
        new.weight.copy_(summed.repeat(1, channels, 1, 1) / channels)
    else:
        # Tile the architecture's own initial filters so the init distribution stays the arch's.
        repeats = -(-channels // old.in_channels)
        new.weight.copy_(old.weight.repeat(1, repeats, 1, 1)[:, :channels])
    if old.bias is not None:
        new.bias.copy_(old.bias)
    replace_module(model, name, new)


def _small_input_stem(model: nn.Module, arch: str) -> None:
    conv, pool = getattr(model, "conv1", None), getattr(model, "maxpool", None)
    if not isinstance(conv, nn.Conv2d) or not isinstance(pool, nn.MaxPool2d):
        raise UserError(f"model.small_input_stem=true works for the ResNet family (conv1 + maxpool), not {arch}")
    model.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()


def torchvision_model(input_shape, num_classes: int, arch: str = "resnet18", weights: str | None = None,
                      small_input_stem: bool = False, **arch_options) -> nn.Module:
    """`torchvision.models.get_model(arch, ...)` with `num_classes` outputs, adapted to `input_shape`.

    `weights` names pretrained weights (e.g. "DEFAULT", "IMAGENET1K_V1"); they download into the
    torch hub cache on first use, and the classifier is replaced when `num_classes` differs.
    Extra options go to the architecture's constructor (e.g. `dropout`, `image_size` for vit).
    """
    import torchvision
    from torchvision import models

    channels, height, width = image_shape(input_shape, f"torchvision/{arch}")
    available = models.list_models(module=torchvision.models)
    if arch not in available:
        raise UserError(f"model.arch={arch!r} is not a torchvision classification model; "
                        f"choose one of: {', '.join(available)}")
    options = dict(arch_options)
    if arch in AUX_LOGIT_ARCHS:
        options.setdefault("aux_logits", False)
        if arch == "googlenet" and weights is None:
            options.setdefault("init_weights", True)
    if arch.startswith("vit_") and weights is None:
        options.setdefault("image_size", height)
    try:
        if weights is None:
            model = models.get_model(arch, weights=None, num_classes=int(num_classes), **options)
        else:
            model = models.get_model(arch, weights=weights, **options)
    except UserError:
        raise
    except (TypeError, ValueError, KeyError, AssertionError) as exc:
        raise UserError(f"torchvision model {arch} (weights={weights}, options={options}): "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    except OSError as exc:  # a download of pretrained weights without network
        raise UserError(f"torchvision model {arch}: cannot fetch weights={weights} ({exc}); run once with "
                        f"internet so they land in the torch hub cache ({torch.hub.get_dir()})") from None
    if weights is not None:
        head_name = _classifier_name(model)
        head = model.get_submodule(head_name)
        if isinstance(head, nn.Linear) and head.out_features != int(num_classes):
            replace_module(model, head_name, nn.Linear(head.in_features, int(num_classes), bias=head.bias is not None))
        elif isinstance(head, nn.Conv2d) and head.out_channels != int(num_classes):
            replace_module(model, head_name, nn.Conv2d(head.in_channels, int(num_classes), 1))
    if small_input_stem:
        _small_input_stem(model, arch)
    _adapt_input_channels(model, channels, weights is not None, arch)
    model.output_layer = _classifier_name(model)
    _check_forward(model, (channels, height, width), int(num_classes), arch)
    return model


def _check_forward(model: nn.Module, shape: tuple[int, int, int], num_classes: int, arch: str) -> None:
    """One forward pass on zeros: an input the model cannot take fails here with one clear line."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.zeros(1, *shape))
    except (RuntimeError, ValueError, AssertionError, IndexError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"torchvision model {arch} cannot take inputs of shape {shape}: {message} "
                        f"(use a larger input, small_input_stem, or another arch)") from None
    finally:
        model.train(was_training)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (1, num_classes):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UserError(f"torchvision model {arch} gives outputs {got}, expected (N, {num_classes})")
