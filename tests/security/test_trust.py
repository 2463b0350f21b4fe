"""`--trust` and registering in code still let a user run a component of their own."""

from __future__ import annotations

import json

import pytest

from overparam.components import REGISTRIES, TRUST_ENV, register, resolve
from overparam.errors import UserError

from saved_model import saved_accuracy

OWN = ["model._target_=own_components.tiny_linear", "train.epochs=null", "train.steps=3", "train.eval_every=3"]


def _summary(run):
    return json.loads((run / "summary.json").read_text())


def test_an_unregistered_component_needs_trust_and_runs_with_it(tmp_path, monkeypatch):
    from overparam.cli.train import train_in_process
    from overparam.store.load import load_run_model

    monkeypatch.delenv(TRUST_ENV, raising=False)
    with pytest.raises(UserError, match=r"model\._target_='own_components\.tiny_linear' is refused.*--trust"):
        train_in_process(OWN, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    monkeypatch.setenv(TRUST_ENV, "1")
    summary = train_in_process(OWN, tmp_path / "trusted")
    model, _ = load_run_model(tmp_path / "trusted")
    assert summary["test_accuracy"] == pytest.approx(saved_accuracy(tmp_path / "trusted"))
    assert sum(p.numel() for p in model.parameters()) == 40 * 10 + 10  # MNIST-1D: 40 inputs, 10 classes
    # The same run opened without --trust is data naming unregistered code: refused.
    monkeypatch.delenv(TRUST_ENV)
    with pytest.raises(UserError, match="is refused"):
        load_run_model(tmp_path / "trusted")


def test_a_component_registered_in_code_runs_without_trust(tmp_path, monkeypatch):
    import own_components

    from overparam.cli.train import train_in_process

    monkeypatch.delenv(TRUST_ENV, raising=False)
    monkeypatch.setitem(REGISTRIES, "model", dict(REGISTRIES["model"]))
    register("model", "tiny_linear", own_components.tiny_linear)
    summary = train_in_process(OWN, tmp_path / "registered")
    assert summary["test_accuracy"] == pytest.approx(saved_accuracy(tmp_path / "registered"))
    assert resolve("model", {"name": "tiny_linear"}) is own_components.tiny_linear


def test_resolution_is_by_exact_registered_path_never_by_prefix():
    from overparam.models.zoo import mlp

    assert resolve("model", {"name": "mlp", "_target_": "overparam.models.zoo.mlp"}, trust=False) is mlp
    assert resolve("model", {"name": "mlp"}, trust=False) is mlp
    for target in ("overparam.models.zoo.torch.hub.load", "overparam.models.zoo.mlp.__globals__",
                   "overparam.models.zoo.mlp ", "overparam.models.zoo", "torch.nn.Linear", 42):
        with pytest.raises(UserError, match="not a registered model"):
            resolve("model", {"name": "mlp", "_target_": target}, trust=False)
    with pytest.raises(UserError, match="not registered; choose one of"):
        resolve("model", {"name": "transformer9000"}, trust=False)
