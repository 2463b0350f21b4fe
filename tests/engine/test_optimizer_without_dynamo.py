"""The project's optimizers skip torch.optim's torch._dynamo import and still train bit for bit as torch's."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from overparam.engine import optim as optim_module
from overparam.engine.optim import build_optimizer, without_dynamo

CONFIGS = [
    {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0},
    {"name": "adam", "lr": 1e-2, "weight_decay": 1e-4},
    {"name": "adamw", "lr": 1e-2, "weight_decay": 1e-2},
]


def train(optimizer_of, steps: int = 4):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    optimizer = optimizer_of(model.parameters())
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(torch.randn(5, 8)), torch.randint(0, 3, (5,))).backward()
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("optim", CONFIGS, ids=lambda c: f"{c['name']}-{c.get('momentum', '')}")
def test_same_numbers_and_state_as_torch(optim, monkeypatch):
    ours_model, ours = train(lambda params: build_optimizer(params, optim))
    monkeypatch.setattr(optim_module, "without_dynamo", lambda optimizer_class: optimizer_class)
    torch_model, theirs = train(lambda params: build_optimizer(params, optim))
    assert type(theirs).__module__.startswith("torch.optim") and type(ours).__mro__[1] is type(theirs)
    assert type(ours).__name__ == type(theirs).__name__
    for mine, reference in zip(ours_model.parameters(), torch_model.parameters()):
        assert torch.equal(mine, reference)
    assert repr(ours.state_dict()) == repr(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())       # a torch optimizer's state loads into ours
    assert repr(ours.state_dict()) == repr(theirs.state_dict())


def test_step_hooks_and_gradient_mode_are_kept():
    model = torch.nn.Linear(3, 1)
    optimizer = without_dynamo(torch.optim.SGD)(model.parameters(), lr=0.1)
    seen = []
    optimizer.register_step_post_hook(lambda opt, args, kwargs: seen.append(torch.is_grad_enabled()))
    model(torch.ones(2, 3)).sum().backward()
    optimizer.step()
    assert seen == [True]          # the hook runs outside the step, where gradients are on again
    assert without_dynamo(torch.optim.SGD) is type(optimizer)


def test_a_training_step_never_imports_dynamo():
    code = ("import sys, torch\n"
            "from overparam.engine.optim import build_optimizer\n"
            "for name in ('sgd', 'adam', 'adamw'):\n"
            "    model = torch.nn.Linear(4, 2)\n"
            "    opt = build_optimizer(model.parameters(), {'name': name, 'lr': 0.1, 'momentum': 0.9})\n"
            "    opt.zero_grad(); model(torch.ones(1, 4)).sum().backward(); opt.step()\n"
            "    opt.load_state_dict(opt.state_dict())\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
