"""The masked Conv1d/Conv2d (one implementation for both dimensions): outputs, gradients, state_dict keys."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from overparam import kernels
from overparam.models.masked import MaskedConv1d, MaskedConv2d, MaskedLinear, densify, masked_modules, sparsify

CASES = [  # (masked class, torch conv, input shape, options)
    (MaskedConv1d, F.conv1d, (3, 4, 19), dict(stride=2, padding=2, dilation=2)),
    (MaskedConv1d, F.conv1d, (3, 4, 19), dict(padding=1, groups=2)),
    (MaskedConv1d, F.conv1d, (3, 4, 19), dict(padding=2, padding_mode="circular")),
    (MaskedConv2d, F.conv2d, (3, 4, 11, 9), dict(stride=(2, 1), padding=1)),
    (MaskedConv2d, F.conv2d, (3, 4, 11, 9), dict(padding=1, groups=2, bias=False)),
    (MaskedConv2d, F.conv2d, (3, 4, 11, 9), dict(padding=1, padding_mode="reflect")),
]


@pytest.mark.parametrize("backend", ["torch", "sparse"])
@pytest.mark.parametrize("cls,conv,shape,options", CASES)
def test_masked_conv_equals_torch_conv_on_masked_weights(cls, conv, shape, options, backend):
    torch.manual_seed(0)
    layer = cls(4, 6, 3, **options)
    mask = (torch.rand(layer.weight.shape) < 0.4).float()
    weight = layer.weight.detach().clone()  # set_mask zeroes the masked weights; keep the originals to check that
    layer.set_mask(mask)
    layer.backend = backend
    x = torch.randn(shape)
    padding_mode = options.get("padding_mode", "zeros")
    pads = layer._reversed_padding_repeated_twice
    padded = x if padding_mode == "zeros" else F.pad(x, pads, mode=padding_mode)
    expected = conv(padded, weight * mask, layer.bias, layer.stride, 0 if padding_mode != "zeros" else layer.padding,
                    layer.dilation, layer.groups)
    out = layer(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    assert torch.count_nonzero(layer.weight.grad * (1 - mask)) == 0  # masked weights get no gradient
    assert torch.count_nonzero(layer.weight.grad) > 0


@pytest.mark.parametrize("plain,masked,shape", [(nn.Conv1d, MaskedConv1d, (2, 3, 12)),
                                                 (nn.Conv2d, MaskedConv2d, (2, 3, 8, 8))])
def test_state_dict_keys_and_old_checkpoints_load(plain, masked, shape):
    kernels.set_default_backend("torch")
    torch.manual_seed(1)
    net = nn.Sequential(plain(3, 5, 3, padding=1), nn.ReLU(), plain(5, 2, 1))
    x = torch.randn(shape)
    dense_out = net(x)
    # A checkpoint saved before the twins shared one class: these exact keys, mask buffers named
    # `<layer>.weight_mask` beside `weight` and `bias`.
    old = {f"{i}.{key}": value.clone() for i in (0, 2) for key, value in net[i].state_dict().items()}
    old.update({f"{i}.weight_mask": torch.ones_like(net[i].weight) for i in (0, 2)})
    old["0.weight_mask"][0] = 0.0
    model = sparsify(nn.Sequential(plain(3, 5, 3, padding=1), nn.ReLU(), plain(5, 2, 1)))
    assert set(model.state_dict()) == {"0.weight", "0.bias", "0.weight_mask", "2.weight", "2.bias", "2.weight_mask"}
    assert all(type(m) is masked for m in masked_modules(model).values())
    model.load_state_dict(old)
    out = model(x)
    conv = F.conv1d if x.dim() == 3 else F.conv2d
    hidden = conv(x, old["0.weight"] * old["0.weight_mask"], old["0.bias"], padding=1)
    torch.testing.assert_close(out, conv(torch.relu(hidden), old["2.weight"], old["2.bias"]))
    assert torch.equal(hidden[:, 0], old["0.bias"][0].expand_as(hidden[:, 0]))  # filter 0 masked: its bias alone
    assert torch.equal(model[0].weight_mask, old["0.weight_mask"])
    assert not torch.allclose(out, dense_out)
    # A dense checkpoint (no masks at all) loads as all-ones masks and gives the dense outputs.
    dense = sparsify(nn.Sequential(plain(3, 5, 3, padding=1), nn.ReLU(), plain(5, 2, 1)))
    dense.load_state_dict(net.state_dict())
    torch.testing.assert_close(dense(x), dense_out)
    assert all(float(m.weight_mask.min()) == 1.0 for m in masked_modules(dense).values())
    back = densify(dense)
    assert set(back.state_dict()) == set(net.state_dict())
    assert type(back[0]) is plain


def test_the_twins_keep_every_option_of_the_layer_they_replace():
    conv = nn.Conv1d(4, 6, 5, stride=2, padding=3, dilation=2, groups=2, bias=False, padding_mode="replicate",
                     dtype=torch.float64)
    twin = sparsify(nn.Sequential(conv))[0]
    assert type(twin) is MaskedConv1d and twin.weight is conv.weight and twin.bias is None
    for option in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                   "padding_mode"):
        assert getattr(twin, option) == getattr(conv, option), option
    assert twin.weight_mask.dtype == torch.float64
    linear = MaskedLinear(3, 2, bias=False)
    assert linear.weight_mask.shape == (2, 3) and linear.bias is None and linear.backend is None
