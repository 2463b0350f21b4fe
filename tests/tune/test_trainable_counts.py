"""Trainable parameter counts are honest: a weight held at zero by its mask is not trainable."""

from __future__ import annotations

import pytest
import torch
from tiny_runs import TINY

from overparam.cli.train import train_in_process
from overparam.models.counting import effective_count, trainable_summary
from overparam.models.masked import sparsify


def test_effective_count_of_a_masked_layer():
    model = sparsify(torch.nn.Sequential(torch.nn.Linear(10, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3)))
    mask = torch.zeros(4, 10)
    mask[:, :3] = 1.0
    model[0].set_mask(mask)
    assert effective_count(model, model.parameters()) == 12 + 4 + 12 + 3
    model[2].weight.requires_grad_(False)
    assert trainable_summary(model) == {"trainable_parameters": 12 + 4 + 3, "parameters_alive": 12 + 4 + 12 + 3}


@pytest.fixture(scope="module")
def ticket(tmp_path_factory):
    """An 80%-sparse one-shot ticket of the tiny MLP (40 -> 16 -> 10: 800 weights, 26 biases)."""
    out = tmp_path_factory.mktemp("ticket") / "ticket"
    return out, train_in_process([*TINY, "method=oneshot", "sparsity=0.8"], out)


def test_finetune_of_a_sparse_ticket_counts_only_its_live_weights(tmp_path, ticket, capsys):
    ticket_dir, ticket_summary = ticket
    assert ticket_summary["remaining_weights"] == 160
    summary = train_in_process([*TINY, "method=finetune", f"from={ticket_dir}"], tmp_path / "ft")
    assert summary["trainable_parameters"] == 160 + 26  # was 826: every masked zero counted as trainable
    assert summary["parameters_alive"] == 186 and summary["parameters"] == 826
    out = capsys.readouterr().out
    assert "186 of 186 parameters trainable" in out and "trainable_parameters=186" in out
    dense = train_in_process([*TINY, "method=finetune", f"from={ticket_dir}", "finetune.dense=true"], tmp_path / "d")
    assert dense["trainable_parameters"] == 826


def test_lora_prints_and_summarizes_its_trainable_count(tmp_path, ticket, capsys):
    ticket_dir, _ = ticket
    summary = train_in_process([*TINY, "method=lora", f"from={ticket_dir}", "lora.rank=4"], tmp_path / "lora")
    # rank 4 on fc0 (16x40) and fc_out (10x16): 4 * (40 + 16) + 4 * (16 + 10)
    assert summary["trainable_parameters"] == summary["lora_parameters"] == 4 * 56 + 4 * 26
    assert summary["parameters_alive"] == 186 + 328
    out = capsys.readouterr().out
    assert "328 of 514 parameters trainable" in out and "trainable_parameters=328" in out
