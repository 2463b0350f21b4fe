"""Per-model training defaults (configs/model/train/<model>.yaml, as open_lth's default_hparams): `runner train
model=X` trains X with its own recipe; the default MLP and every preset compose exactly as before."""

from __future__ import annotations

import pytest

from overparam.cli.train import compose_checked
from overparam.store.identity import config_hash

from light_cli import run_light

PAPER = {"name": "adam", "lr": 0.01, "weight_decay": 0.0, "schedule": "constant"}


def _recipe(cfg) -> tuple:
    return ({k: cfg["optim"][k] for k in PAPER}, cfg["train"]["epochs"], cfg["train"]["batch_size"])


@pytest.mark.parametrize("model", ["cnn1d", "cnn1d_mnist1d", "mlp_mnist1d", "logreg"])
def test_an_mnist1d_model_trains_with_the_papers_recipe(model):
    assert _recipe(compose_checked([f"model={model}"])) == (PAPER, 60, 100)


def test_the_default_mlp_and_a_model_without_its_own_file_keep_the_shared_defaults():
    shared = ({"name": "sgd", "lr": 0.1, "weight_decay": 0.0005, "schedule": "cosine"}, 20, 128)
    assert _recipe(compose_checked([])) == shared
    assert _recipe(compose_checked(["model=lenet300_100"])) == shared
    assert config_hash(compose_checked([])) == "ff932d73b3a1428b"  # the pinned hash of the default run


def test_the_command_line_and_a_preset_replace_a_models_defaults():
    cfg = compose_checked(["model=cnn1d", "train.epochs=5", "optim.lr=0.003"])
    assert (cfg["train"]["epochs"], cfg["optim"]["lr"], cfg["optim"]["name"]) == (5, 0.003, "adam")
    # cnn_vs_mlp trains both arms with one recipe (the shared one): the gap is the architecture's.
    preset = compose_checked(["experiment=cnn_vs_mlp", "model=cnn1d"], check_method=False)
    assert _recipe(preset) == ({"name": "sgd", "lr": 0.1, "weight_decay": 0.0005, "schedule": "cosine"}, 30, 128)


def test_ls_model_documents_each_models_training_without_torch():
    out = run_light(["ls", "model"], heavy=("torch", "torchvision", "hydra", "matplotlib"))
    lines = out.splitlines()
    cnn = lines.index(next(l for l in lines if l.startswith("  cnn1d ")))
    assert lines[cnn + 1].split() == ["(trains", "with", "train.epochs=60", "train.batch_size=100", "optim.name=adam",
                                      "optim.lr=0.01", "optim.weight_decay=0.0", "optim.schedule=constant)"]
    mlp = lines.index(next(l for l in lines if l.startswith(" *mlp ")))
    assert "trains with" not in lines[mlp + 1]
    assert "trains with train.yaml's train and optim" in out
