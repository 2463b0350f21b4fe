"""The composition route end to end on a tiny MLP: IMP ticket -> fine-tuned copies -> greedy soup -> KD."""

from __future__ import annotations

import torch

from overparam.cli.train import train_in_process
from overparam.store.checkpoint import load_state

from tiny_runs import tiny

TINY = tiny(8, "dataset.split_seed=0")


def _masks(path):
    return {k: v for k, v in load_state(path).items() if k.endswith("_mask")}


def test_ticket_soup_distill_keeps_the_tickets_mask_through_the_chain(tmp_path):
    imp = tmp_path / "imp"
    train_in_process([*TINY, "method=imp", "sparsity=0.75", "prune.rate=0.5"], imp)
    ticket = _masks(imp / "level_2" / "model.safetensors")
    copies = []
    for seed in (1, 2):
        copies.append(tmp_path / f"ft{seed}")
        train_in_process([*TINY, "method=finetune", f"from={imp}@level_2", f"seed={seed}"], copies[-1])
    soup = train_in_process([*TINY, "method=greedy_soup", f"ingredients=[{copies[0]},{copies[1]}]"], tmp_path / "soup")
    assert soup["sparsity"] == 0.75
    assert soup["val_accuracy"] >= soup["best_ingredient_val_accuracy"]
    distilled = train_in_process([*TINY, "method=kd", f"teacher.from={tmp_path / 'soup'}",
                                  f"student.from={imp}@level_2", "kd.baseline=true"], tmp_path / "kd")
    assert distilled["sparsity"] == 0.75 and "scratch_test_accuracy" in distilled
    for path in (copies[0] / "checkpoints" / "model.safetensors", tmp_path / "soup" / "checkpoints" / "model.safetensors",
                 tmp_path / "kd" / "checkpoints" / "model.safetensors"):
        masks = _masks(path)
        assert masks.keys() == ticket.keys()
        for key in ticket:
            assert torch.equal(masks[key] != 0, ticket[key] != 0), (path, key)
